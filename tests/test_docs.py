"""The documentation site builds with ``mkdocs build --strict``: every reference, link and docstring is valid.

A docstring that mkdocstrings cannot read (an ``Args:`` entry naming a parameter the signature lacks, a
broken cross-reference) or a page linking to a missing file fails this test with mkdocs' warnings.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocstrings_handlers.python", reason='the docs extra: pip install -e ".[docs]"')
    pytest.importorskip("material", reason='the docs extra: pip install -e ".[docs]"')
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or [result.stderr])
    for page in ("index.html", "reference/models/index.html", "reference/infer/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
