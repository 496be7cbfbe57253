"""Training runs: reproducibility, resume, checkpoints, bad input, the train command."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.errors import CheckpointError, ConfigError, DeviceError
from pyroseq.infer.checkpoint import save_checkpoint
from pyroseq.infer.run import RunConfig, load_run, train_run
from pyroseq.infer.trainer import NonFiniteLossError, Trainer
from pyroseq.models import build_guide, build_model

TINY = dict(
    source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8, batch_size=8,
    valid_every=3, valid_size=16, checkpoint_every=3, steps=6,
)  # fmt: skip


def params(run_dir):
    run = load_run(run_dir)
    return {k: v.clone() for k, v in run.model.state_dict().items()}, run


def interrupt_after(monkeypatch, steps):
    """Make the word sampler raise KeyboardInterrupt (as Ctrl-C would) when asked for batch steps + 1."""
    from pyroseq.data import words

    original = words.WordSampler.__next__
    calls = {"n": 0}

    def interrupting(self):
        calls["n"] += 1
        if calls["n"] == steps + 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(words.WordSampler, "__next__", interrupting)
    return lambda: monkeypatch.setattr(words.WordSampler, "__next__", original)


@pytest.mark.parametrize("model", ["dssm", "rnn"])
def test_stop_and_resume_equals_uninterrupted(tmp_path, monkeypatch, model):
    train_run(RunConfig(model=model, **TINY), tmp_path / "full", progress=False)
    restore = interrupt_after(monkeypatch, 3)
    stopped = train_run(
        RunConfig(model=model, **{**TINY, "checkpoint_every": 0}), tmp_path / "half", progress=False
    )
    assert stopped["interrupted"] and stopped["steps"] == 3
    assert load_run(tmp_path / "half").step == 3  # the stop wrote a checkpoint
    restore()
    resumed = train_run(None, tmp_path / "half", resume=True, progress=False)
    assert resumed["steps"] == 6 and resumed["steps_this_run"] == 3 and not resumed["interrupted"]
    a, run = params(tmp_path / "full")
    b, _ = params(tmp_path / "half")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert run.step == 6
    lines = (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_new_run_refuses_a_used_directory_and_resume_needs_a_checkpoint(tmp_path):
    train_run(RunConfig(**{**TINY, "steps": 1}), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train_run(RunConfig(**TINY), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="holds no checkpoint to resume"):
        train_run(None, tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="options differ from the saved run: --state-dim 8"):
        train_run(None, tmp_path / "run", resume=True, overrides={"state_dim": 8}, progress=False)


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    train_run(RunConfig(**{**TINY, "steps": 1}), tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state["model_spec"]["kwargs"]["state_dim"] = 5  # the saved weights are for D = 4
    state.pop("format_version")
    save_checkpoint(ckpt, state)
    with pytest.raises(CheckpointError, match="does not match the model its config describes"):
        load_run(tmp_path / "run")
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable pyroseq checkpoint"):
        load_run(tmp_path / "run")


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_loading_never_executes_pickled_code(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format_version": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a readable pyroseq checkpoint"):
        load_run(path)
    assert "pickled code ran" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, error",
    [
        ({"model": "gpt"}, "unknown model 'gpt': use one of dssm, rnn"),
        ({"state_dim": 0}, "--state-dim must be positive"),
        ({"particles": 0}, "--particles must be positive"),
        ({"objective": "vi"}, "unknown objective 'vi'"),
        ({"flow": "planar"}, "unknown flow"),
        ({"guide": "magic"}, "unknown guide"),
    ],
)
def test_bad_options(tmp_path, change, error):
    with pytest.raises(ConfigError, match=error):
        train_run(RunConfig(**{**TINY, **change}), tmp_path / "run", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(tmp_path):
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        train_run(RunConfig(**{**TINY, "device": "cuda"}), tmp_path / "run", progress=False)


def test_non_finite_loss_skips_steps_then_stops(tmp_path):
    from pyroseq.data.words import load_words

    corpus = load_words("sample")
    model = build_model("dssm", vocab_size=len(corpus.vocab), state_dim=4, flow_hidden=8, emitter_hidden=8)
    guide = build_guide("gaussian", vocab_size=len(corpus.vocab), state_dim=4, rnn_hidden=8)
    trainer = Trainer(model, guide, max_bad_steps=3)
    batch = next(corpus.sampler(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] = math.nan  # every loss is now NaN
    poisoned = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        trainer.step(batch)  # skipped, parameters untouched
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, poisoned[k], equal_nan=True)
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        trainer.step(batch)
    with pytest.raises(CheckpointError, match="non-finite parameter"):
        save_checkpoint(tmp_path / "bad.pt", trainer.state_dict())
    assert not (tmp_path / "bad.pt").exists()
    assert before.keys() == poisoned.keys()
    assert trainer.step_count == 2  # the third, failing step is not counted


def test_train_command_json(tmp_path):
    args = ["train", "--source", "sample", "--state-dim", "4", "--flow-hidden", "8", "--emitter-hidden", "8",
            "--guide-hidden", "8", "--batch-size", "8", "--steps", "4", "--valid-size", "16", "--objective",
            "iwae", "--particles", "3", "--out", str(tmp_path / "run"), "--json"]  # fmt: skip
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    for key in ("steps", "initial_loss", "final_loss", "words_per_second", "checkpoint"):
        assert result[key] is not None, key
    assert result["steps"] == 4
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "already holds a run" in again.output
    resumed = CliRunner().invoke(
        cli, [*args[:-3], "--steps", "6", "--out", str(tmp_path / "run"), "--resume", "--json"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.output.strip().splitlines()[-1])["steps"] == 6


@pytest.mark.parametrize(
    "extra, logged",
    [
        (["--training", "scheduled", "--schedule", "linear"], "teacher_prob"),
        (["--training", "scheduled", "--schedule", "exp"], "teacher_prob"),
        (["--training", "scheduled", "--schedule", "invsigmoid", "--schedule-k", "100"], "teacher_prob"),
        (["--training", "professor"], "disc_accuracy"),
        (["--cell", "lstm"], "loss"),
    ],
)
def test_train_command_runs_every_rnn_training(tmp_path, extra, logged):
    args = ["train", "--model", "rnn", "--source", "sample", "--state-dim", "8", "--batch-size", "8",
            "--steps", "3", "--valid-size", "8", "--out", str(tmp_path / "run"), "--json",
            *extra]  # fmt: skip
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(logged in r for r in records)
    if logged == "teacher_prob":
        probs = [r["teacher_prob"] for r in records]
        assert probs[0] == pytest.approx(1.0, abs=0.05) and probs == sorted(probs, reverse=True)


@pytest.mark.parametrize("training, name", [("scheduled", "RNNLM"), ("professor", "ProfessorForcing")])
def test_jit_is_refused_where_a_trace_would_freeze_training(tmp_path, training, name):
    with pytest.raises(ConfigError, match=f"--jit cannot trace {name} as configured"):
        train_run(RunConfig(**{**TINY, "model": "rnn", "training": training, "jit": True}), tmp_path / "r")
