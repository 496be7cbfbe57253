"""Run a tutorial script cell by cell and record what each code cell prints, for its page.

A tutorial (``docs/tutorials/NN_name.py``) is a script in the "percent" format that Jupytext and VS Code
read: ``# %%`` starts a code cell, ``# %% [markdown]`` a text cell of ``# ``-prefixed lines, and the module
docstring is the first text cell. ``docs/hooks.py`` turns it into a page; this runner executes it, cells in
order in one namespace, and writes ``<out>/<name>.outputs.json``: the size it ran at and each code cell's
printed output with a hash of its source, so that a page never shows the output of code that has since
changed.

    python docs/notebook.py docs/tutorials/01_dssm_in_ten_minutes.py      # the page's figures and outputs
    python docs/notebook.py docs/tutorials/01_dssm_in_ten_minutes.py --smoke --out /tmp/t   # as CI runs it
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import json
import re
import sys
from pathlib import Path

CELL = re.compile(r"^# %%(?P<kind>.*)$")


def cells(source: str) -> list[tuple[str, str, int]]:
    """The ``(kind, text, line)`` cells of a percent-format script: ``kind`` is ``"markdown"`` or ``"code"``,
    ``line`` the script's line number of the text's first line."""
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree, clean=True)
    lines = source.splitlines()
    start = tree.body[0].end_lineno if docstring is not None else 0
    found: list[tuple[str, list[str], int]] = [("markdown", (docstring or "").splitlines(), 1)]
    for number, line in enumerate(lines[start:], start=start + 1):
        match = CELL.match(line)
        if match:
            found.append(("markdown" if "[markdown]" in match["kind"] else "code", [], number + 1))
        elif found[-1][0] == "markdown" and len(found) > 1:
            found[-1][1].append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        else:
            found[-1][1].append(line)
    result = []
    for kind, body, first in found:
        while body and not body[0].strip():
            body, first = body[1:], first + 1
        text = "\n".join(body).rstrip()
        if text:
            result.append((kind, text, first))
    return result


def digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


def run(path: Path, argv: list[str]) -> list[dict[str, str]]:
    """Execute the script's code cells in order (``sys.argv`` = the script and ``argv``); their outputs."""
    namespace = {"__name__": "__main__", "__file__": str(path)}
    saved_argv, sys.argv = sys.argv, [str(path), *argv]
    outputs = []
    try:
        for kind, code, line in cells(path.read_text(encoding="utf-8")):
            if kind != "code":
                continue
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                # Blank lines before the cell keep tracebacks pointing at the script's own line numbers.
                exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)  # noqa: S102
            outputs.append({"source": digest(code), "output": buffer.getvalue()})
            sys.stdout.write(buffer.getvalue())
    finally:
        sys.argv = saved_argv
    return outputs


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("script", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the script's tiny sizes, as CI runs it")
    parser.add_argument("--out", type=Path, default=None, help="default: the script's img/ folder")
    args = parser.parse_args(argv)
    out = args.out or args.script.parent / "img"
    out.mkdir(parents=True, exist_ok=True)
    outputs = run(args.script, [*(["--smoke"] if args.smoke else []), "--out", str(out)])
    record = out / f"{args.script.stem}.outputs.json"
    recorded = {"size": "smoke" if args.smoke else "page", "cells": outputs}
    record.write_text(json.dumps(recorded, indent=1) + "\n", encoding="utf-8")
    return record


if __name__ == "__main__":
    main()
