"""Fault injection: bad input, signals, divergence, full disks, foreign directories, concurrent runs.

Each case is one a careful user met (issue 15): it must end in one ``error: ...`` line with exit status 2
(or a clean stop), never a traceback, a hang, lost files or silently wrong figures.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_evaluate import MarkovModel

from pyroseq.cli.main import cli
from pyroseq.data.text import load_text
from pyroseq.data.words import load_words
from pyroseq.decode import decode
from pyroseq.errors import CheckpointError, ConfigError, DataError, ResourceError, StorageError
from pyroseq.evaluate.noise import noise_usage
from pyroseq.infer.trainer import DivergenceError, Trainer
from pyroseq.models import build_model
from pyroseq.runs import RunConfig, load_run, train_run
from pyroseq.runs.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8, batch_size=8,
    valid_every=3, valid_size=16, checkpoint_every=3, steps=6,
)  # fmt: skip
TINY_ARGS = ["--source", "sample", "--state-dim", "4", "--flow-hidden", "8", "--emitter-hidden", "8",
             "--guide-hidden", "8", "--batch-size", "8", "--valid-size", "16", "--checkpoint-every", "3",
             "--steps", "6"]  # fmt: skip


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, *fragments: str, code: int = 2) -> str:
    """The command failed with ``code`` and printed one line, ``error: ...``, holding ``fragments``."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def word_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "words.txt"
    path.write_text(text)
    return path


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_run(run_dir).model.state_dict().items()}


def assert_same_params(a_dir: Path, b_dir: Path) -> None:
    a, b = params(a_dir), params(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# --- data that enters ------------------------------------------------------------------------------


def test_an_unreadable_corpus_file_is_one_line(tmp_path, monkeypatch):
    path = word_file(tmp_path, "a 1\nb 2\n")
    original = Path.read_bytes

    def denied(self):  # chmod 000 does not stop root, who runs CI containers: refuse as the OS would
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match="permission denied"):
        load_words(path)
    out = invoke("train", "--file", str(path), "--out", str(tmp_path / "run"), "--steps", "1")
    assert_one_line_error(out, "cannot read", "permission denied")


def test_counts_past_int64_are_refused_with_the_line(tmp_path):
    with pytest.raises(DataError, match="line 2: count must be positive and at most"):
        load_words(word_file(tmp_path, f"a 1\nb {10**30}\n"))
    with pytest.raises(DataError, match="sum to 9223372036854775808, more than"):
        load_words(word_file(tmp_path, f"a {2**62}\nb {2**62}\n"))
    corpus = load_words(word_file(tmp_path, f"a {2**62}\nb {2**62 - 1}\n"))  # the largest sum that fits
    assert math.isfinite(corpus.entropy_nats) and corpus.entropy_nats == pytest.approx(math.log(2))


def test_a_very_long_word_needs_an_explicit_max_length(tmp_path):
    path = word_file(tmp_path, "ab 3\n" + "x" * 10_000 + " 1\ncd 2\n")
    with pytest.raises(DataError, match="a word of 10000 characters.*pass max_length=N"):
        load_words(path)
    corpus = load_words(path, max_length=5)
    assert corpus.words == ["ab", "cd"] and corpus.notes == ["dropped 1 words longer than 5 symbols"]
    assert load_words(path, max_length=10_000).max_length == 10_001  # asked for explicitly: kept


def test_a_one_character_text_file_is_one_clear_line(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("a")
    with pytest.raises(DataError, match="has 1 characters: too few to split"):
        load_text(path)
    out = invoke("train", "--data", "text", "--file", str(path), "--out", str(tmp_path / "run"))
    assert_one_line_error(out, "too few to split", "use a longer text")


# --- sizes, seeds and numbers that enter ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--lr", "inf"], "'inf' is not a finite number"),
        (["--lr", "nan"], "'nan' is not a finite number"),
        (["--lr", "0"], "--lr"),
        (["--seed", str(2**64)], "--seed"),
        (["--seed", "-1"], "--seed"),
        (["--state-dim", "0"], "--state-dim"),
        (["--batch-size", "1e7"], "--batch-size"),
        (["--threads", "1000"], "--threads"),
        (["--lr-decay", "2"], "--lr-decay"),
        (["--ema", "1"], "--ema"),
    ],
)
def test_train_options_are_checked_where_they_enter(tmp_path, args, fragment):
    out = invoke("train", *TINY_ARGS, "--out", str(tmp_path / "run"), *args)
    assert_one_line_error(out, fragment, "(see 'cli train -h')")
    assert not (tmp_path / "run").exists()


def test_the_library_checks_its_own_sizes():
    corpus = load_words("sample")
    model = build_model("rnn", vocab_size=len(corpus.vocab), state_dim=4)
    with pytest.raises(ConfigError, match="lr must be a positive finite number"):
        Trainer(model, lambda ids, mask: None, lr=math.inf)
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\]"):
        corpus.sampler(4, seed=2**64)
    with pytest.raises(ConfigError, match="seed must be"):
        decode(model, num=2, max_length=3, seed=2**64)


@pytest.mark.parametrize("command", ["evaluate", "sample", "check"])
def test_huge_seeds_are_one_line_in_every_command(tmp_path, command):
    out = invoke(command, str(tmp_path), "--seed", str(2**64))
    assert_one_line_error(out, "--seed")


def test_tiny_temperatures_decode_as_their_limit_greedy():
    model = MarkovModel(seed=5, eos_bias=0.5)
    greedy = decode(model, num=4, max_length=6, decoder="greedy")
    for temperature in (1e-320, 1e-30):
        cold = decode(model, num=4, max_length=6, decoder="ancestral", temperature=temperature, seed=1)
        assert [ids for ids, _ in cold] == [ids for ids, _ in greedy]
        assert all(math.isfinite(score) for _, score in cold)
    hot = decode(model, num=4, max_length=6, decoder="ancestral", temperature=1e300, seed=1)
    assert all(math.isfinite(score) for _, score in hot)


def test_sample_at_a_subnormal_temperature_is_the_documented_greedy_limit(tmp_path):
    """``pyroseq sample --temperature 1e-320`` is defined (and says so in its help): the greedy limit."""
    run = tmp_path / "run"
    config = RunConfig(
        model="rnn", source="sample", state_dim=4, embed_dim=4, batch_size=8, steps=2, valid_size=8
    )
    train_run(config, run, progress=False)
    help_text = " ".join(invoke("sample", "--help").output.split())
    assert "subnormals such as 1e-320) picks the most probable symbol" in help_text
    cold = invoke("sample", str(run), "-n", "3", "--temperature", "1e-320", "--json")
    greedy = invoke("sample", str(run), "-n", "3", "--decoder", "greedy", "--json")
    assert cold.exit_code == 0 and greedy.exit_code == 0, cold.output + greedy.output
    assert (
        json.loads(cold.output.splitlines()[-1])["samples"]
        == json.loads(greedy.output.splitlines()[-1])["samples"]
    )


def test_decoding_more_than_fits_is_refused_with_an_estimate(monkeypatch):
    model = MarkovModel(seed=5, eos_bias=0.5)
    with pytest.raises(ResourceError, match=r"decoding 10000000000 sequences .* needs about .* available"):
        decode(model, num=10**10, max_length=12)
    import pyroseq.checks

    monkeypatch.setattr(pyroseq.checks, "available_memory", lambda device="cpu": 10**6)
    with pytest.raises(ResourceError, match=r"-n"):
        decode(model, num=10**5, max_length=12)
    monkeypatch.setattr(pyroseq.checks, "available_memory", lambda device="cpu": 10**9)
    assert len(decode(model, num=10**3, max_length=12)) == 10**3


def test_one_inner_noise_draw_is_refused_not_reported_as_zero():
    model = build_model("dssm", vocab_size=8, state_dim=2, flow_hidden=4)
    with pytest.raises(ConfigError, match="num_inner must be at least 2"):
        noise_usage(model, length=3, num_outer=4, num_inner=1, progress=False)
    out = invoke("evaluate", "anywhere", "--noise-samples", "1")
    assert_one_line_error(out, "--noise-samples")


# --- signals ---------------------------------------------------------------------------------------


def signal_during_step(monkeypatch, step: int, signum: int) -> None:
    original = Trainer.step

    def signalled(self, batch):
        if self.step_count == step:
            os.kill(os.getpid(), signum)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "step", signalled)


def test_sigterm_is_handled_like_sigint_checkpoint_then_exit_143(tmp_path, monkeypatch):
    train_run(RunConfig(**TINY), tmp_path / "full", progress=False)
    signal_during_step(monkeypatch, 1, signal.SIGTERM)  # arrives during the second step
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = invoke("train", *TINY_ARGS, "--checkpoint-every", "0", "--out", str(tmp_path / "half"), "--json")
    assert out.exit_code == 143, out.output  # 128 + SIGTERM, as a shell reports it
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # both handlers are back
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["stopped_by"] == "SIGTERM" and result["steps"] == 2
    assert load_run(tmp_path / "half").step == 2  # the step under way finished, then a checkpoint
    monkeypatch.undo()
    train_run(None, tmp_path / "half", resume=True, progress=False)
    assert_same_params(tmp_path / "full", tmp_path / "half")


def test_ctrl_c_while_starting_is_one_line():
    # Importing torch takes seconds; a KeyboardInterrupt raised by that import stands in for Ctrl-C then.
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name == 'torch':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "sys.argv = ['pyroseq', 'data', 'words', '--source', 'sample']\n"
        "from pyroseq.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "error: interrupted while starting; nothing was done"


# --- divergence ------------------------------------------------------------------------------------


def test_divergence_is_caught_before_any_checkpoint_holds_it(tmp_path):
    with pytest.raises(DivergenceError, match=r"diverged at step 1: a parameter reached .*no checkpoint"):
        train_run(RunConfig(**{**TINY, "lr": 1e6}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # The advice holds: starting again with a lower --lr trains.
    result = train_run(RunConfig(**{**TINY, "lr": 1e-3}), tmp_path / "run", progress=False)
    assert result["steps"] == 6


def test_after_a_divergence_resuming_with_a_lower_lr_works(tmp_path):
    run = tmp_path / "run"
    train_run(RunConfig(**{**TINY, "steps": 3}), run, progress=False)
    good = params(run)
    with pytest.raises(
        DivergenceError, match="the checkpoint of step 3 is from before it: resume with a lower"
    ):
        train_run(None, run, resume=True, overrides={"steps": 6, "lr": 1e6}, progress=False)
    assert load_run(run).step == 3
    for k, v in params(run).items():  # the checkpoint resume uses holds the good parameters
        torch.testing.assert_close(v, good[k], rtol=0, atol=0)
    result = train_run(None, run, resume=True, overrides={"steps": 6, "lr": 1e-3}, progress=False)
    assert result["steps"] == 6 and math.isfinite(result["final_loss"])
    largest = max(float(v.abs().max()) for v in params(run).values())
    assert largest < 100
    out = invoke("sample", str(run), "-n", "3")
    assert out.exit_code == 0, out.output


def test_the_trainer_stops_on_an_exploding_parameter_before_the_next_step():
    corpus = load_words("sample")
    model = build_model("rnn", vocab_size=len(corpus.vocab), state_dim=4)
    trainer = Trainer(model, lambda ids, mask: None, lr=1.0, max_param=1.5)
    batch = next(corpus.sampler(4))
    with pytest.raises(DivergenceError, match=r"\|x\| = .* \(max_param 1.5\)"):
        for _ in range(5):
            trainer.step(batch)
    assert trainer.step_count < 5


# --- storage ---------------------------------------------------------------------------------------


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(3)}})

    def full(obj, f, *args, **kwargs):  # what torch's zip writer raises when a write fails
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        StorageError, match="could not write .*checkpoint.pt.*the previous checkpoint.pt is intact"
    ):
        save_checkpoint(path, {"step": 2, "model": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_permission_denied_while_writing_a_plot_is_one_line(tmp_path, monkeypatch):
    train_run(RunConfig(**TINY), tmp_path / "run", progress=False)
    from matplotlib.figure import Figure

    def denied(self, path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Figure, "savefig", denied)
    out = invoke("evaluate", str(tmp_path / "run"), "-k", "2", "--no-bounds", "--noise-samples", "2")
    assert_one_line_error(out, "permission denied", "noise_usage.png")


# --- run directories -------------------------------------------------------------------------------


def test_a_new_run_never_writes_into_a_directory_of_the_users_own_files(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}\n')
    (mine / "metrics.jsonl").write_text("my log\n")
    with pytest.raises(
        StorageError, match=r"is not empty and is not a pyroseq run \(it holds config.json, metr"
    ):
        train_run(RunConfig(**TINY), mine, progress=False)
    out = invoke("train", *TINY_ARGS, "--out", str(mine))
    assert_one_line_error(out, "not a pyroseq run", "choose another --out")
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "metrics.jsonl"]
    assert (mine / "config.json").read_text() == '{"my": "settings"}\n'


@pytest.mark.parametrize("out", ["", "."])
def test_a_new_run_refuses_the_current_directory(tmp_path, monkeypatch, out):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = invoke("train", *TINY_ARGS, "--out", out)
    assert_one_line_error(result, "--out names the current directory")
    assert list(here.iterdir()) == []


LOCK_HOLDER = """
import sys
from pyroseq.runs.guard import lock_run
lock = lock_run(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes stdin or kills this process
"""


def test_one_process_trains_a_run_at_a_time_and_a_dead_holder_does_not_block(tmp_path):
    run = tmp_path / "run"
    train_run(RunConfig(**{**TINY, "steps": 3}), run, progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = invoke("train", "--out", str(run), "--resume", "--steps", "6")
        assert_one_line_error(out, f"is being trained by another process (PID {holder.pid})")
        fresh = invoke("train", *TINY_ARGS, "--out", str(tmp_path / "new"))  # other directories are free
        assert fresh.exit_code == 0, fresh.output
    finally:
        holder.kill()  # kill -9: the lock file stays behind, the OS lock does not
        holder.wait()
    assert (run / ".pyroseq.lock").read_text().strip() == str(holder.pid)
    assert train_run(None, run, resume=True, overrides={"steps": 6}, progress=False)["steps"] == 6


def test_a_directory_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    original = os.open

    def read_only(path, flags, *args):  # chmod does not stop root, who runs CI containers
        if str(path).endswith(".pyroseq.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return original(path, flags, *args)

    train_run(RunConfig(**{**TINY, "steps": 3}), tmp_path / "run", progress=False)
    monkeypatch.setattr(os, "open", read_only)
    out = invoke("train", "--out", str(tmp_path / "run"), "--resume", "--steps", "6")
    assert_one_line_error(out, "cannot write to the run directory", "permission denied")

    def no_mkdir(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", no_mkdir)
    out = invoke("train", *TINY_ARGS, "--out", str(tmp_path / "parent" / "new"))
    assert_one_line_error(out, "cannot create the run directory in", "permission denied")


# --- provenance ------------------------------------------------------------------------------------


def test_a_changed_corpus_is_refused_by_resume_evaluate_sample_and_check(tmp_path):
    words = word_file(tmp_path, "".join(f"{w} {n}\n" for n, w in enumerate(["ab", "ba", "abc", "cab"], 1)))
    run = tmp_path / "run"
    train_run(RunConfig(**{**TINY, "source": str(words), "steps": 3}), run, progress=False)
    recorded = torch.load(run / "checkpoint.pt", weights_only=True)["data"]
    assert recorded["source"] == str(words) and len(recorded["sha256"]) == 64
    original = words.read_text()
    words.write_text(original.replace("cab 4", "cab 40"))  # same alphabet, other p(w)
    with pytest.raises(CheckpointError, match="changed since the run was trained on it"):
        train_run(None, run, resume=True, overrides={"steps": 6}, progress=False)
    for command in (["evaluate", str(run), "-k", "2"], ["sample", str(run), "-n", "2"], ["check", str(run)]):
        assert_one_line_error(invoke(*command), "changed since the run was trained", "restore the corpus")
    words.write_text(original)
    assert invoke("sample", str(run), "-n", "2").exit_code == 0
    assert train_run(None, run, resume=True, overrides={"steps": 6}, progress=False)["steps"] == 6


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    train_run(RunConfig(**{**TINY, "steps": 3}), tmp_path / "a", progress=False)
    train_run(RunConfig(**{**TINY, "steps": 3, "state_dim": 6}), tmp_path / "b", progress=False)
    (tmp_path / "a" / "checkpoint.pt").write_bytes((tmp_path / "b" / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"is not the checkpoint of the run .*state_dim 4 vs 6"):
        load_run(tmp_path / "a")
    assert_one_line_error(invoke("evaluate", str(tmp_path / "a")), "replaced by another run's")
    with pytest.raises(CheckpointError, match="replaced by another run's"):
        train_run(None, tmp_path / "a", resume=True, overrides={"steps": 6}, progress=False)


def test_damaged_metrics_lines_are_skipped_and_reported_on_resume(tmp_path):
    run = tmp_path / "run"
    train_run(RunConfig(**{**TINY, "steps": 3}), run, progress=False)
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    damaged = [b"\xff\xfe not utf-8\n", b'{"step": "two"}\n', b"[1, 2]\n"]
    (run / "metrics.jsonl").write_bytes(
        lines[0] + b"".join(damaged) + b"".join(lines[1:]) + b'{"step": 4, "lo'
    )
    out = invoke("train", "--out", str(run), "--resume", "--steps", "6", "--json")
    assert out.exit_code == 0, out.output
    assert "note: skipped 3 damaged lines of" in out.output and "(line 2, 3, 4)" in out.output
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_train_reports_what_the_corpus_filters_dropped(tmp_path):
    words = word_file(tmp_path, "ab 3\nb2b 2\ncd 1\n")
    out = invoke(
        "train", *TINY_ARGS[2:], "--file", str(words), "--steps", "1", "--out", str(tmp_path / "run")
    )
    assert out.exit_code == 0, out.output
    assert "note: dropped 1 words with symbols that are not letters: '2' DIGIT TWO in 1 (e.g. 'b2b')" in (
        out.output
    )


# --- memory ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch-size", str(10**7)], "a training step of 10000000 sequences x 8 particles"),
        (["--objective", "iwae", "--particles", str(10**6)], "x 1000000 particles"),
        # the triangular flow's D x D conditioner output is what the allocator refuses at this D
        (["--state-dim", str(10**6), "--flow", "triangular"], "the model's parameters do not fit in memory"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_allocating(tmp_path, args, fragment):
    out = invoke("train", *TINY_ARGS, "--out", str(tmp_path / "run"), *args)
    line = assert_one_line_error(out, fragment)
    assert re.search(r"needs (about )?[0-9.]+ [GT]iB", line)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# --- kill -9 ---------------------------------------------------------------------------------------


def test_stale_checkpoint_temporaries_are_removed_when_the_run_next_starts(tmp_path):
    """A kill -9 mid-write leaves ``.checkpoint.pt.<random>`` (resume is unaffected); the next start of
    the run removes it, and leaves other files alone."""
    run = tmp_path / "run"
    config = RunConfig(
        model="rnn", source="sample", state_dim=4, embed_dim=4, batch_size=8, steps=2, valid_size=8
    )
    train_run(config, run, progress=False)
    stale = [run / ".checkpoint.pt.k9x_2ab", run / ".config.json.q1w2e3r4"]
    for path in stale:
        path.write_bytes(b"half a write")
    (run / "notes.txt").write_text("mine")
    train_run(None, run, resume=True, overrides={"steps": 3}, progress=False)
    assert not any(path.exists() for path in stale)
    assert (run / "notes.txt").read_text() == "mine"


KILL_TRIALS = int(os.environ.get("PYROSEQ_KILL_TRIALS", "4"))  # a seeded handful in CI; more by hand


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    """SIGKILL cannot be caught: whatever it interrupts (start-up, a step, a checkpoint being written),
    starting again (no checkpoint yet) or resuming must end with exactly the uninterrupted run's
    parameters and one metrics line per step."""
    import random
    import time

    train = [sys.executable, "-m", "pyroseq", "train", "--no-progress"]
    args = [*TINY_ARGS[:-2], "--steps", "40", "--checkpoint-every", "4", "--valid-every", "5"]
    began = time.monotonic()
    subprocess.run(
        [*train, *args, "--out", str(tmp_path / "full")], cwd=ROOT, check=True, capture_output=True
    )
    duration = time.monotonic() - began
    rng = random.Random(15)
    for trial in range(KILL_TRIALS):
        run = tmp_path / f"killed{trial}"
        victim = subprocess.Popen([*train, *args, "--out", str(run)], cwd=ROOT, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, duration))
        victim.kill()
        if victim.wait() != 0:  # killed before it ended: resume, or start again if no checkpoint was written
            resume = (run / "checkpoint.pt").exists()
            again = ["--out", str(run), "--resume"] if resume else [*args, "--out", str(run)]
            done = subprocess.run([*train, *again], cwd=ROOT, capture_output=True, text=True)
            assert done.returncode == 0, (trial, done.stderr)
        assert_same_params(tmp_path / "full", run)
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 41)), trial
