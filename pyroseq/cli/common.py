"""What every ``pyroseq`` subcommand shares: ``--json`` output and one-line errors."""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import click

from pyroseq.errors import PyroseqError

__all__ = ["json_option", "emit", "handle_errors", "to_jsonable"]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object as the last line of stdout."
)


def to_jsonable(value: Any) -> Any:
    """Numbers, strings, lists and dicts only; non-finite floats become null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    """Print ``lines`` for a person, then with ``--json`` the result as the last line of stdout."""
    for line in lines:
        click.echo(line)
    if as_json:
        click.echo(json.dumps(to_jsonable(result)))


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a :class:`PyroseqError` into ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PyroseqError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper
