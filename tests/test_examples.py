"""Every example runs with its --smoke sizes."""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(path), "--smoke"])
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip(), "an example should report what it did"


def test_dssm_svi_example_lowers_the_loss():
    sys.path.insert(0, str(EXAMPLES[0].parent))
    try:
        import dssm_svi
    finally:
        sys.path.pop(0)
    first = dssm_svi.main(["--state-dim", "4", "--steps", "1", "--batch-size", "16"])
    later = dssm_svi.main(["--state-dim", "4", "--steps", "25", "--batch-size", "16"])
    assert later < first - 1.0
