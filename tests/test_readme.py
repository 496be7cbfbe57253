"""The README's main job, at a tiny size: every ``pyroseq`` command of it parses and runs as written.

The job's options are the study's choice (docs/results.md); a rename or a changed default that broke
them would otherwise only show when a new user pastes the line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from click.testing import CliRunner

from pyroseq.cli.main import cli

README = Path(__file__).resolve().parent.parent / "README.md"
TINY = {"--steps": "4", "--top": "100", "--batch-size": "16", "--threads": "1"}  # one thread: in-process


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
    # the defaults are the recipe (issue 27): a user's own run starts as the README's does
    assert not {"--kl-warmup", "--lr", "--objective", "--particles", "--emitter-bias"} & set(train)
    for args in commands:
        args = shrink(args, tmp_path / "quickstart")
        if args[0] == "train":
            args += ["--no-progress", "--valid-size", "16"]
        if args[0] == "evaluate":
            args += ["--samples", "4", "--noise-samples", "2", "--no-bounds", "--no-progress"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert (tmp_path / "quickstart" / "checkpoint.pt").is_file()


def bash_blocks() -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)\n\s*```", README.read_text(), re.S)]


def test_readme_test_command_installs_what_the_tests_need_and_ci_runs_it_as_written():
    """In a fresh environment ``python -m pytest -q`` alone fails ("No module named pytest"): the command
    installs the test extras first, and .ci/run runs that very line from the README."""
    command = bash_blocks()[1]
    parts = [shlex.split(part) for part in command.split("&&")]
    assert parts[-1] == ["python", "-m", "pytest", "-q"]
    installs = [p for p in parts[:-1] if p[:2] == ["pip", "install"]]
    assert ["pip", "install", "-e", ".[test]"] in installs
    assert installs[0] == ["pip", "install", "torch==2.13.0"]  # the CPU wheel first, as in command 1
    ci = (README.parent / ".ci" / "run").read_text()
    extract = re.search(r'^eval "\$\((.*)\)"$', ci, re.M)
    assert extract, ".ci/run does not run the README's test command"
    found = subprocess.run(["bash", "-c", extract[1]], cwd=README.parent, capture_output=True, text=True)
    assert found.stdout.strip() == command


def test_the_readme_python_snippet_runs_as_written():
    """The README's plain-SVI snippet, run as a user pastes it, at 2 steps on the shipped sample words."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "range(200)" in code and 'load_words("symspell", top=10_000)' in code
    code = code.replace("range(200)", "range(2)").replace(
        'load_words("symspell", top=10_000)', 'load_words("sample")'
    )
    exec(compile(code, "README.md", "exec"), {})
