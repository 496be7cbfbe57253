"""Every tutorial page runs at its --smoke size and draws every figure its page shows.

The pages (docs/tutorials/NN_name.py, rendered by docs/hooks.py) show figures the script itself saves; this
runs each script cell by cell as ``docs/notebook.py`` does and checks that each ``img/...png`` the page
links to was written by this run.
"""

import json
import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("[0-9][0-9]_*.py"))
FIGURE = re.compile(r"!\[[^\]]*\]\(img/([^)]+\.png)\)")

sys.path.insert(0, str(DOCS))
try:
    import notebook
finally:
    sys.path.pop(0)


def test_there_are_tutorials():
    assert [p.stem[:2] for p in TUTORIALS] == [f"{n:02d}" for n in range(1, len(TUTORIALS) + 1)] != []


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_each_page_shows_the_output_of_its_current_code(path):
    """The page prints what docs/notebook.py recorded when it last ran the script: a code cell edited since
    would show an output it no longer produces (rerun docs/notebook.py)."""
    record = json.loads((path.parent / "img" / f"{path.stem}.outputs.json").read_text(encoding="utf-8"))
    code = [text for kind, text, _ in notebook.cells(path.read_text(encoding="utf-8")) if kind == "code"]
    assert [cell["source"] for cell in record["cells"]] == [notebook.digest(text) for text in code]
    shown = FIGURE.findall(path.read_text(encoding="utf-8"))
    assert all((path.parent / "img" / figure).is_file() for figure in shown)


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_draws_its_figures(path, tmp_path):
    outputs = notebook.run(path, ["--smoke", "--out", str(tmp_path)])
    code_cells = [c for c in notebook.cells(path.read_text(encoding="utf-8")) if c[0] == "code"]
    assert len(outputs) == len(code_cells)
    assert any(o["output"].strip() for o in outputs), "a tutorial should print what it found"
    figures = FIGURE.findall(path.read_text(encoding="utf-8"))
    assert figures, "a tutorial page shows at least one figure"
    missing = [f for f in figures if not (tmp_path / f).is_file()]
    assert not missing, f"the page links to figures this run did not draw: {missing}"
