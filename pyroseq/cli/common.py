"""What every ``pyroseq`` subcommand shares: ``--json`` output, option types, and one-line errors."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click
import torch
from click.core import ParameterSource

from pyroseq.data.batch import MAX_SEED
from pyroseq.errors import ConfigError, PyroseqError, first_line

__all__ = [
    "json_option",
    "emit",
    "handle_errors",
    "to_jsonable",
    "OneLineErrors",
    "POSITIVE",
    "NON_NEGATIVE",
    "SEED",
    "Finite",
    "POSITIVE_FLOAT",
    "CORES",
    "threads_option",
    "corpus_source",
]

POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
SEED = click.IntRange(0, MAX_SEED)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Finite(click.FloatRange):
    """A float range that also refuses ``inf`` and ``nan`` (which ``FloatRange`` lets through)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


POSITIVE_FLOAT = Finite(min=0, min_open=True)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object as the last line of stdout."
)


def threads_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N`` (default 1), which sets ``torch.set_num_threads(N)`` as it is parsed."""

    def set_threads(ctx: click.Context, param: click.Parameter, value: int) -> int:
        torch.set_num_threads(value)
        return value

    return click.option(
        "--threads", type=click.IntRange(1, CORES), default=1, show_default=True, expose_value=False,
        callback=set_threads,
        help="torch intra-op CPU threads. On an idle machine a second thread speeds the DSSM's default step "
        "1.3x; beside another busy process it costs far more than it gains (see docs/benchmarks.md).",
    )(command)  # fmt: skip


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


def corpus_source(source: str | None, path: str | None, *, source_flag: str) -> str | None:
    """The corpus that ``--source`` or ``--file`` names (``--file PATH`` is ``--source PATH``); both given
    on the command line (``source_flag`` is the parameter that holds ``--source``) is a usage error."""
    if path is None:
        return source
    if click.get_current_context().get_parameter_source(source_flag) == ParameterSource.COMMANDLINE:
        raise ConfigError("give either --source or --file, not both (--file PATH is --source PATH)")
    return path


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(
    fn: Callable[..., Any] | None = None, *, flags: Mapping[str, str] | None = None
) -> Callable[..., Any]:
    """Turn the errors a user can cause into ``error: <message>`` on stderr and exit status 2.

    These are :class:`PyroseqError`, and the operating system's refusals that no pyroseq check can
    foresee: a permission denied, a full disk, an allocation that fails although the estimate fitted.
    A library error names Python parameters; the message says the command's flags instead: ``flags``
    maps a parameter to its flag where that is not ``--name-with-dashes``.
    """
    if fn is None:
        return functools.partial(handle_errors, flags=flags)
    names = dict(flags or {})

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PyroseqError as e:
            _fail(e.naming(names))
        except PermissionError as e:
            _fail(f"permission denied: {e.filename or e}: make it accessible, or choose another path")
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            _fail(f"no space left on the device of {e.filename or 'a file'}: free some space and run again")
        except (MemoryError, RuntimeError) as e:
            # torch.OutOfMemoryError (CUDA) is a RuntimeError; the CPU allocator raises a plain one.
            if not isinstance(e, MemoryError | torch.OutOfMemoryError) and "can't allocate memory" not in str(
                e
            ):
                raise
            _fail(
                f"out of memory ({first_line(e, limit=160)}): use smaller sizes (--batch-size, --particles, "
                "--state-dim, -n)"
            )

    return wrapper


class OneLineErrors(click.Group):
    """A group whose usage errors (a bad option value, a missing argument) and Ctrl-C print one line.

    Click would print the usage and a hint around the error; ``error: <message> (see <command> -h)``
    with exit status 2 reads like every other pyroseq error. Ctrl-C outside training prints
    ``error: interrupted`` with status 130 (128 + SIGINT).
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:  # `pyroseq` alone: the help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
            _fail(e.format_message() + hint, e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)
