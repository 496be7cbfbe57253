"""The README's main job, at a tiny size: every ``pyroseq`` command of it parses and runs as written.

The job's options are the study's choice (docs/results.md); a rename or a changed default that broke
them would otherwise only show when a new user pastes the line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from pyroseq.cli.main import cli

README = Path(__file__).resolve().parent.parent / "README.md"
TINY = {"--steps": "4", "--top": "100", "--batch-size": "16"}


def main_job() -> list[list[str]]:
    """The ``pyroseq ...`` commands of the README's first bash block, each as its arguments."""
    block = re.search(r"```bash\n(.*?)\n\s*```", README.read_text(), re.S)
    assert block, "README.md has no bash block"
    commands = [shlex.split(part) for part in block[1].split("&&")]
    return [c[1:] for c in commands if c and c[0] == "pyroseq"]


def shrink(args: list[str], out: Path) -> list[str]:
    """The same command at a tiny size, writing under ``out``."""
    args = [a.replace("runs/quickstart", str(out)) for a in args]
    for option, value in TINY.items():
        if option in args:
            args[args.index(option) + 1] = value
    return args


def test_readme_main_job_runs_as_written_at_a_tiny_size(tmp_path):
    commands = main_job()
    assert [c[0] for c in commands] == ["train", "evaluate", "sample"]
    train = commands[0]
    assert "--kl-warmup" in train and "--lr" in train  # the study's recipe, not the defaults
    for args in commands:
        args = shrink(args, tmp_path / "quickstart")
        if args[0] == "train":
            args += ["--no-progress", "--valid-size", "16"]
        if args[0] == "evaluate":
            args += ["--samples", "4", "--noise-samples", "2", "--no-bounds", "--no-progress"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert (tmp_path / "quickstart" / "checkpoint.pt").is_file()
