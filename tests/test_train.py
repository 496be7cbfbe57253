"""Training runs: reproducibility, resume, checkpoints, bad input, the train command."""

import dataclasses
import json
import math
import os
import signal
import stat

import pytest
import torch
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.data import Vocabulary
from pyroseq.data.text import load_text
from pyroseq.errors import CheckpointError, ConfigError, DeviceError, PyroseqError
from pyroseq.guides import build_guide
from pyroseq.infer.trainer import NonFiniteLossError, Trainer
from pyroseq.models import build_model, emitter_output_layer, unigram_log_frequencies
from pyroseq.runs.checkpoint import save_checkpoint
from pyroseq.runs.config import RunConfig
from pyroseq.runs.rundir import corpus_fingerprint, load_run
from pyroseq.runs.specs import guide_spec
from pyroseq.runs.train import train_run

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


# KL warm-up over 5 of the 6 steps: the resumed steps must go on at beta = 4/5, 1, 1, not start again.
@pytest.mark.parametrize("model, extra", [("dssm", {}), ("rnn", {}), ("dssm", {"kl_warmup": 5})])
def test_stop_and_resume_equals_uninterrupted(tmp_path, monkeypatch, model, extra):
    train_run(RunConfig(model=model, **TINY, **extra), tmp_path / "full", progress=False)
    restore = interrupt_after(monkeypatch, 3)
    stopped = train_run(
        RunConfig(model=model, **{**TINY, "checkpoint_every": 0}, **extra), tmp_path / "half", progress=False
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
    with pytest.raises(CheckpointError, match="already holds a run; pass resume=True"):
        train_run(RunConfig(**TINY), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="holds no checkpoint to resume"):
        train_run(None, tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="options differ from the saved run: state_dim=8"):
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
        ({"state_dim": 0}, "state_dim must be positive"),
        ({"particles": 0}, "particles must be positive"),
        ({"objective": "vi"}, "unknown objective 'vi'"),
        ({"flow": "planar"}, "unknown flow"),
        ({"guide": "magic"}, "unknown guide"),
    ],
)
def test_bad_options(tmp_path, change, error):
    with pytest.raises(ConfigError, match=error):
        train_run(RunConfig(**{**TINY, **change}), tmp_path / "run", progress=False)


def test_trainer_refuses_bad_arguments():
    model = build_model("dssm", vocab_size=8, state_dim=2, flow_hidden=4, emitter_hidden=4)
    guide = build_guide("gaussian", vocab_size=8, state_dim=2, rnn_hidden=4)
    for name in ("lr", "total_steps", "max_param"):
        for bad in (0, -1.0, math.inf, math.nan):
            with pytest.raises(ConfigError, match=f"{name} must be a positive finite number"):
                Trainer(model, guide, **{name: bad})
    for bad in (-1.0, math.inf, math.nan, None, "10"):
        with pytest.raises(ConfigError, match="clip_norm must be a finite number >= 0 \\(0: no clipping\\)"):
            Trainer(model, guide, clip_norm=bad)
    for bad in (-0.1, math.inf, math.nan, "0.1", True):
        with pytest.raises(ConfigError, match="weight_decay must be a finite number >= 0"):
            Trainer(model, guide, weight_decay=bad)
    for bad in ((0.9,), (0.9, 1.0), (-0.1, 0.999), (0.9, "0.999"), 0.9):
        with pytest.raises(ConfigError, match=r"betas must be two numbers in \[0, 1\)"):
            Trainer(model, guide, betas=bad)
    professor = build_model("professor", vocab_size=8, state_dim=4, embed_dim=4, disc_hidden=4)
    with pytest.raises(ConfigError, match="jit=True cannot trace ProfessorForcing"):
        Trainer(professor, build_guide("empty"), jit=True)


def test_guide_flow_option_reaches_the_guide():
    vocab = Vocabulary.from_texts(["abc"])
    for given, flow in (("diagonal", "diagonal"), ("coupling", "coupling"), ("none", None)):
        spec = guide_spec(RunConfig(guide_flow=given), vocab)
        assert spec["name"] == "future" and spec["kwargs"]["flow"] == flow
    assert "flow" not in guide_spec(RunConfig(guide="gaussian"), vocab)["kwargs"]


def test_a_new_run_directory_may_be_nested_in_new_folders(tmp_path):
    train_run(RunConfig(**{**TINY, "steps": 1}), tmp_path / "new" / "folders" / "run", progress=False)
    assert load_run(tmp_path / "new" / "folders" / "run").step == 1


def test_progress_bar_when_asked(tmp_path, capsys):
    train_run(RunConfig(**{**TINY, "steps": 2}), tmp_path / "run", progress=True)
    assert "2/2" in capsys.readouterr().err


def test_text_corpus_fingerprint_follows_its_content(tmp_path):
    def fingerprint(text):
        path = tmp_path / "t.txt"
        path.write_text(text)
        return corpus_fingerprint(load_text(path))["sha256"]

    first = fingerprint("to be or not to be " * 20)
    assert fingerprint("to be or not to be " * 20) == first
    assert fingerprint("to be or not to bee " * 20) != first


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(tmp_path):
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        train_run(RunConfig(**{**TINY, "device": "cuda"}), tmp_path / "run", progress=False)


def test_non_finite_loss_skips_steps_then_stops(tmp_path):
    from pyroseq.data.words import load_words

    corpus = load_words("sample")
    model = build_model("dssm", vocab_size=len(corpus.vocab), state_dim=4, flow_hidden=8, emitter_hidden=8)
    guide = build_guide("gaussian", vocab_size=len(corpus.vocab), state_dim=4, rnn_hidden=8)
    trainer = Trainer(model, guide, lr=3e-3, max_bad_steps=3)
    batch = next(corpus.sampler(4))
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] = math.nan  # every loss is now NaN
    poisoned = {k: v.clone() for k, v in model.state_dict().items()}
    for step in (1, 2):
        message = rf"^step {step}: non-finite loss .*parameter '.*' is not finite.* lower the learning rate"
        with pytest.warns(UserWarning, match=message + r" \(lr=0.003\)$"):
            trainer.step(batch)  # skipped, parameters untouched
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, poisoned[k], equal_nan=True)
    assert trainer.optimizer.param_groups[0]["lr"] == trainer.lr  # and the schedule where it was
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        trainer.step(batch)
    with pytest.raises(CheckpointError, match="non-finite parameter"):
        save_checkpoint(tmp_path / "bad.pt", trainer.state_dict())
    assert not (tmp_path / "bad.pt").exists()
    assert trainer.step_count == 2  # the third, failing step is not counted


def test_a_non_finite_loss_names_its_site(tmp_path):
    """A guide whose log-density is NaN at finite parameters: the warning names the guide's site 'h'."""
    import pyro
    import pyro.distributions as dist

    from pyroseq.data.words import load_words

    corpus = load_words("sample")
    model = build_model("dssm", vocab_size=len(corpus.vocab), state_dim=4, flow_hidden=8, emitter_hidden=8)
    batch = next(corpus.sampler(4))
    T = batch.ids.shape[1]

    def guide(ids, mask):
        loc = pyro.param("zero_scale_loc", torch.zeros(T, 4))
        with pyro.plate("seqs", mask.shape[0], dim=-1):
            pyro.sample("h", dist.Normal(loc, torch.zeros(T, 4), validate_args=False).to_event(2))

    trainer = Trainer(model, guide)
    with pytest.warns(
        UserWarning, match=r"^step 1: non-finite loss .* at the guide's site 'h' \(log-density nan\)"
    ):
        trainer.step(batch)


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


def test_the_optimiser_options_reach_the_run_and_bad_ones_are_refused(tmp_path, monkeypatch):
    import pyroseq.runs.train as train_module

    seen = []  # the Adam settings of every parameter group, at the run's last step

    class Spy(train_module.Trainer):
        def step(self, batch):
            seen[:] = [(g["weight_decay"], g["betas"]) for g in self.optimizer.param_groups]
            return super().step(batch)

    monkeypatch.setattr(train_module, "Trainer", Spy)
    args = ["train", "--model", "rnn", "--source", "sample", "--state-dim", "4", "--batch-size", "8",
            "--steps", "2", "--valid-size", "8", "--weight-decay", "0.1", "--betas", "0.96",
            "0.999"]  # fmt: skip
    out = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    config = load_run(tmp_path / "run").config
    assert (config.weight_decay, config.betas) == (0.1, (0.96, 0.999))
    assert seen and set(seen) == {(0.1, (0.96, 0.999))}  # the optimiser trains with them, not only the record
    for bad, flag in ((["--betas", "0.9", "1"], "--betas"), (["--weight-decay", "-1"], "--weight-decay")):
        out = CliRunner().invoke(cli, [*args, *bad, "--out", str(tmp_path / "bad")])
        assert out.exit_code == 2 and flag in out.output, out.output


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
    with pytest.raises(ConfigError, match=f"jit=True cannot trace {name} as configured"):
        train_run(RunConfig(**{**TINY, "model": "rnn", "training": training, "jit": True}), tmp_path / "r")


@pytest.mark.parametrize(
    "name, options",
    [("professor", {"disc_hidden": 4}), ("rnn", {"schedule": {"kind": "linear", "c": 0.1}})],
)
def test_jit_trace_elbo_in_plain_svi_is_refused_in_the_trainers_words(name, options):
    """Under a JIT trace the model refuses as the Trainer's jit=True does, not with torch's page of
    tensors (professor forcing) or a silently frozen teacher probability (scheduled sampling)."""
    import pyro
    from pyro.infer import SVI, JitTrace_ELBO

    from pyroseq.data import pad_batch
    from pyroseq.errors import first_line

    model = build_model(name, vocab_size=8, state_dim=4, embed_dim=4, **options)
    with pytest.raises(ConfigError) as trainer:
        Trainer(model, build_guide("empty"), jit=True)
    batch = pad_batch([[3, 4, 2], [5, 2]])
    svi = SVI(
        model, build_guide("empty"), pyro.optim.Adam({"lr": 1e-2}), JitTrace_ELBO(ignore_jit_warnings=True)
    )
    with pytest.raises(ConfigError) as traced:
        svi.step(batch.ids, batch.mask)
    assert first_line(traced.value) == str(trainer.value)


def assert_same_params(a_dir, b_dir):
    a, _ = params(a_dir)
    b, _ = params(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_sigint_mid_step_finishes_the_step_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full = train_run(RunConfig(**TINY), tmp_path / "full", progress=False)
    original = Trainer.step

    def interrupted_step(self, batch):
        if self.step_count == 2:  # Ctrl-C arrives during the third step
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "step", interrupted_step)
    handler = signal.getsignal(signal.SIGINT)
    stopped = train_run(RunConfig(**{**TINY, "checkpoint_every": 0}), tmp_path / "half", progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is back
    assert stopped["interrupted"] and stopped["steps"] == 3
    monkeypatch.setattr(Trainer, "step", original)
    resumed = train_run(None, tmp_path / "half", resume=True, progress=False)
    assert resumed["steps"] == 6
    assert_same_params(tmp_path / "full", tmp_path / "half")
    # The summary's losses are means over the whole run, the same however it was split.
    assert resumed["initial_loss"] == pytest.approx(full["initial_loss"], abs=0)
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], abs=0)


def test_non_finite_loss_error_is_a_user_error_and_resume_may_lower_the_step_size(tmp_path):
    assert issubclass(NonFiniteLossError, PyroseqError)
    train_run(RunConfig(**{**TINY, "steps": 3}), tmp_path / "run", progress=False)
    change = {"lr": 1e-3, "lr_decay": 0.5, "clip_norm": 1.0, "weight_decay": 0.1, "betas": (0.8, 0.99),
              "steps": 4}  # fmt: skip
    train_run(None, tmp_path / "run", resume=True, overrides=change, progress=False)
    saved = RunConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    assert {k: getattr(saved, k) for k in change} == change


def crash_at(monkeypatch, call):
    """Make the word sampler raise RuntimeError (a crash) when asked for batch number ``call``."""
    from pyroseq.data import words

    original = words.WordSampler.__next__
    calls = {"n": 0}

    def crashing(self):
        calls["n"] += 1
        if calls["n"] == call:
            raise RuntimeError("crash")
        return original(self)

    monkeypatch.setattr(words.WordSampler, "__next__", crashing)
    return lambda: monkeypatch.setattr(words.WordSampler, "__next__", original)


def test_resume_after_a_crash_drops_metrics_logged_after_the_checkpoint(tmp_path, monkeypatch):
    restore = crash_at(monkeypatch, 6)
    with pytest.raises(RuntimeError, match="crash"):
        train_run(RunConfig(**TINY), tmp_path / "run", progress=False)  # checkpoint at 3, logged to 5
    restore()
    train_run(None, tmp_path / "run", resume=True, progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_a_run_that_failed_before_its_first_checkpoint_can_start_again(tmp_path, monkeypatch):
    restore = crash_at(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="crash"):
        train_run(RunConfig(**TINY), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "checkpoint.pt").exists()
    restore()
    result = train_run(RunConfig(**TINY), tmp_path / "run", progress=False)
    assert result["steps"] == 6
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_valid_loss_is_the_final_steps(tmp_path):
    result = train_run(RunConfig(**{**TINY, "steps": 5}), tmp_path / "run", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    at_three = next(r["valid_loss"] for r in lines if r["step"] == 3)
    run = load_run(tmp_path / "run")
    from pyroseq.infer.trainer import Trainer as T

    trainer = T(run.model, run.guide)
    corpus = run.corpus()
    valid = corpus.batch(corpus.sampler(16, seed=1).indices())
    torch.manual_seed(2)
    assert result["valid_loss"] == pytest.approx(trainer.evaluate_loss(valid), abs=0)
    assert result["valid_loss"] != at_three


@pytest.mark.parametrize(
    "config, given, error",
    [
        ({}, {"cell": "lstm"}, "cell applies to model rnn only"),
        ({}, {"training": "professor"}, "training applies to model rnn only"),
        ({}, {"layers": 2}, "layers applies to model rnn only"),
        ({"model": "rnn"}, {"flow": "diagonal"}, "flow applies to model dssm only"),
        ({"model": "rnn"}, {"guide_hidden": 8}, "guide_hidden applies to model dssm only"),
        ({"data": "text"}, {"top": 10}, "top applies to data words only"),
        ({}, {"chunk_length": 8}, "chunk_length applies to data text only"),
        (
            {"guide": "gaussian"},
            {"guide_flow": "diagonal"},
            "guide_flow has no effect: guide gaussian",
        ),
        ({"model": "rnn"}, {"schedule": "exp"}, "schedule applies to training scheduled only"),
        (
            {"model": "rnn", "training": "scheduled"},
            {"adversarial_weight": 2.0},
            "adversarial_weight applies",
        ),
    ],
)
def test_options_that_do_not_apply_are_refused(tmp_path, config, given, error):
    with pytest.raises(ConfigError, match=error):
        train_run(RunConfig(**{**TINY, **config}), tmp_path / "run", overrides=given, progress=False)


def test_options_that_do_apply_are_accepted(tmp_path):
    given = {"embed_dim": 8, "guide_flow": "diagonal", "top": 50, "steps": 1}  # the DSSM guide embeds
    train_run(RunConfig(**TINY), tmp_path / "run", overrides=given, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: saved[k] for k in given} == given
    run = load_run(tmp_path / "run")
    assert len(run.corpus().words) == 50
    assert run.guide.embed.embedding_dim == 8


def test_a_relative_corpus_file_is_saved_as_an_absolute_path(tmp_path, monkeypatch):
    from pyroseq.data.words import _sample_path

    (tmp_path / "words.txt").write_text(_sample_path().read_text())
    monkeypatch.chdir(tmp_path)
    train_run(RunConfig(**{**TINY, "source": "words.txt", "steps": 1}), "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["source"]
    assert saved == str((tmp_path / "words.txt").resolve())
    monkeypatch.chdir(tmp_path / "run")
    load_run(tmp_path / "run").corpus()  # found from another directory


def test_resume_refuses_steps_not_past_the_runs_step(tmp_path):
    train_run(RunConfig(**{**TINY, "steps": 3}), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ConfigError, match="steps=3 is not more than the run's step 3"):
        train_run(None, tmp_path / "run", resume=True, overrides={"steps": 3}, progress=False)
    assert (tmp_path / "run" / "config.json").read_text() == before


def test_resume_may_name_the_corpus_file_again_by_a_relative_path(tmp_path, monkeypatch):
    from pyroseq.data.words import _sample_path

    (tmp_path / "words.txt").write_bytes(_sample_path().read_bytes())
    monkeypatch.chdir(tmp_path)
    train_run(RunConfig(**{**TINY, "source": "words.txt", "steps": 2}), tmp_path / "run", progress=False)
    stored = load_run(tmp_path / "run").config.source
    assert stored == str(tmp_path.resolve() / "words.txt")
    # the command line of the first run, given again with --resume: the same file, so no change
    result = train_run(None, tmp_path / "run", resume=True, overrides={"source": "words.txt", "steps": 4},
                       progress=False)  # fmt: skip
    assert result["steps"] == 4 and load_run(tmp_path / "run").config.source == stored  # kept absolute
    (tmp_path / "other.txt").write_bytes(_sample_path().read_bytes())
    with pytest.raises(CheckpointError, match="source=other.txt"):
        train_run(None, tmp_path / "run", resume=True, overrides={"source": "other.txt", "steps": 6},
                  progress=False)  # fmt: skip


def test_run_files_get_the_usual_mode(tmp_path):
    train_run(RunConfig(**{**TINY, "steps": 1}), tmp_path / "run", progress=False)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint.pt", "config.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "run" / name).st_mode) == 0o666 & ~umask, name


@pytest.mark.parametrize("load", [load_run, lambda d: train_run(None, d, resume=True, progress=False)])
@pytest.mark.parametrize("field", ["step", "config", "model_spec", "sampler", "rng"])
def test_incomplete_checkpoints_are_checkpoint_errors(tmp_path, load, field):
    train_run(RunConfig(**{**TINY, "steps": 1}), tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state.pop(field)
    save_checkpoint(ckpt, state)
    if field in ("sampler", "rng") and load is load_run:
        load(tmp_path / "run")  # loading for evaluation does not need them
        return
    with pytest.raises(CheckpointError, match=f"lacks '{field}'"):
        load(tmp_path / "run")


@pytest.mark.parametrize("load", [load_run, lambda d: train_run(None, d, resume=True, progress=False)])
def test_a_checkpoint_whose_model_spec_has_an_unknown_argument_is_a_checkpoint_error(tmp_path, load):
    train_run(RunConfig(**{**TINY, "steps": 1}), tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state["model_spec"]["kwargs"]["wings"] = 2
    save_checkpoint(ckpt, state)
    with pytest.raises(CheckpointError, match="describes a model this pyroseq cannot build"):
        load(tmp_path / "run")


def test_the_final_checkpoint_is_written_once(tmp_path, monkeypatch):
    from pyroseq.runs import rundir

    saves = []
    original = rundir.save_checkpoint
    monkeypatch.setattr(
        rundir, "save_checkpoint", lambda path, state: (saves.append(state["step"]), original(path, state))
    )
    train_run(RunConfig(**TINY), tmp_path / "run", progress=False)
    assert saves == [3, 6]


def logged(run_dir, name):
    """The ``name`` column of a run's metrics.jsonl, by step."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[name] for r in map(json.loads, lines)}


def test_the_learning_rate_decays_geometrically_to_lr_times_lr_decay(tmp_path):
    config = RunConfig(**{**TINY, "lr": 0.1, "lr_decay": 0.01, "steps": 4})
    train_run(config, tmp_path / "run", progress=False)
    # Step i (from 1) trains at lr * lr_decay^((i - 1) / steps): 0.1 first, 0.1 * 0.01^(3/4) last.
    expected = {i: 0.1 * 0.01 ** ((i - 1) / 4) for i in range(1, 5)}
    assert logged(tmp_path / "run", "lr") == pytest.approx(expected, rel=1e-12)


def test_extending_a_run_continues_the_learning_rate_decay_without_a_jump(tmp_path):
    train_run(RunConfig(**{**TINY, "lr": 0.1, "lr_decay": 0.01}), tmp_path / "run", progress=False)
    train_run(None, tmp_path / "run", resume=True, overrides={"steps": 12}, progress=False)
    # The per-step factor 0.01^(1/6) was set when the run started: steps 7..12 go on at it.
    expected = {i: 0.1 * 0.01 ** ((i - 1) / 6) for i in range(1, 13)}
    assert logged(tmp_path / "run", "lr") == pytest.approx(expected, rel=1e-12)


def test_a_lower_lr_on_resume_scales_the_decay_reached(tmp_path):
    config = RunConfig(**{**TINY, "lr": 0.1, "lr_decay": 0.01, "steps": 3})
    train_run(config, tmp_path / "run", progress=False)
    train_run(None, tmp_path / "run", resume=True, overrides={"steps": 6, "lr": 0.01}, progress=False)
    rates = logged(tmp_path / "run", "lr")
    assert rates[4] == pytest.approx(0.01 * 0.01 ** (3 / 3), rel=1e-12)
    assert rates[6] == pytest.approx(0.01 * 0.01 ** (5 / 3), rel=1e-12)


def test_extending_a_scheduled_sampling_run_continues_its_teacher_schedule(tmp_path):
    config = RunConfig(**{**TINY, "model": "rnn", "training": "scheduled", "schedule": "exp"})
    train_run(config, tmp_path / "run", progress=False)
    train_run(None, tmp_path / "run", resume=True, overrides={"steps": 12}, progress=False)
    # The exponential schedule's default base 0.01^(1/6) was set from the first --steps: it goes on decaying.
    expected = {i: 0.01 ** ((i - 1) / 6) for i in range(1, 13)}
    assert logged(tmp_path / "run", "teacher_prob") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "schedule, first, last",
    [
        ("linear", 1.0, 0.0),  # 1 - i / steps
        ("exp", 1.0, 0.01),  # (0.01^(1/steps))^i
        ("invsigmoid", 500 / 501, 500 / (500 + math.exp(10))),  # k = steps / 10: 0.998 down to 0.022
    ],
)
def test_default_teacher_schedules_start_and_end_where_documented(schedule, first, last):
    from pyroseq.data.vocab import Vocabulary
    from pyroseq.models.schedules import TeacherSchedule
    from pyroseq.runs.specs import model_spec

    config = RunConfig(model="rnn", training="scheduled", schedule=schedule, steps=5000)
    spec = model_spec(config, Vocabulary("ab"))
    built = TeacherSchedule.from_dict(spec["kwargs"]["schedule"])
    assert built.teacher_prob(0) == pytest.approx(first, abs=1e-9)
    assert built.teacher_prob(5000) == pytest.approx(last, abs=1e-9)


def test_gradients_are_averaged_over_the_sequences_of_a_batch():
    """A batch of n copies of one word gives the gradient of one copy: the summed loss is divided by n
    (a step's clip_norm and learning rate then mean the same whatever the batch size)."""
    from pyroseq.data.batch import pad_batch

    figures = []
    for copies in (1, 8):
        torch.manual_seed(0)
        model = build_model("rnn", vocab_size=6, state_dim=4, embed_dim=4)
        trainer = Trainer(model, build_guide("empty"), clip_norm=1e6)
        figures.append(trainer.step(pad_batch([[3, 4, 5, 2]] * copies)))
    assert figures[1]["grad_norm"] == pytest.approx(figures[0]["grad_norm"], rel=1e-5)
    assert figures[1]["loss"] == pytest.approx(figures[0]["loss"], rel=1e-5)  # per sequence too


def test_clip_norm_clips_the_step_and_zero_leaves_the_gradient_as_it_is():
    """The gradient Adam is handed: the raw one with clip_norm 0, one of norm clip_norm where the raw norm is
    above it; grad_norm is the raw norm either way."""
    from pyroseq.data.batch import pad_batch

    batch = pad_batch([[3, 4, 5, 2], [4, 3, 2]])
    for clip in (0.0, 1e-3):
        torch.manual_seed(0)
        trainer = Trainer(build_model("rnn", vocab_size=6, state_dim=4, embed_dim=4), build_guide("empty"),
                          clip_norm=clip)  # fmt: skip
        handed = []

        def record(optimizer, args, kwargs, handed=handed):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            grads = [p.grad for p in params if p.grad is not None]
            handed.append(float(torch.nn.utils.get_total_norm(grads)))

        trainer.optimizer.register_step_pre_hook(record)
        raw = [trainer.step(batch)["grad_norm"] for _ in range(3)]
        assert all(r > 0.1 for r in raw)
        expected = raw if clip == 0 else [clip] * 3
        assert handed == pytest.approx(expected, rel=1e-4)


def test_weight_decay_and_betas_are_pyros_clipped_adam_on_the_summed_loss():
    """Pyro's Deep Markov Model example steps ``ClippedAdam(betas, weight_decay=w * B)`` on the loss summed
    over a batch of B sequences; the trainer's ``weight_decay=w`` on the loss per sequence takes the same
    steps (Adam does not see the loss's scale), and a trainer that loads a checkpoint keeps its own
    settings."""
    from pyro.optim.clipped_adam import ClippedAdam

    from pyroseq.data.batch import pad_batch

    batch = pad_batch([[3, 4, 5, 2], [4, 3, 2], [5, 5, 2]])
    torch.manual_seed(0)
    model = build_model("rnn", vocab_size=6, state_dim=4, embed_dim=4)
    twin = build_model("rnn", vocab_size=6, state_dim=4, embed_dim=4)
    twin.load_state_dict(model.state_dict())
    trainer = Trainer(model, build_guide("empty"), lr=0.05, lr_decay=1.0, clip_norm=0, weight_decay=0.3,
                      betas=(0.8, 0.99))  # fmt: skip
    pyros = ClippedAdam(list(twin.parameters()), lr=0.05, betas=(0.8, 0.99), clip_norm=1e9, lrd=1.0,
                        weight_decay=0.3 * len(batch))  # fmt: skip
    summed = trainer.loss.differentiable_loss
    for _ in range(5):
        trainer.step(batch)
        pyros.zero_grad()
        summed(twin, build_guide("empty"), batch.observations, batch.mask).backward()
        pyros.step()
    for (name, ours), theirs in zip(model.named_parameters(), twin.parameters(), strict=True):
        # Adam adds its eps after the bias correction, ClippedAdam before: apart where gradients are ~0.
        torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4, msg=name)
    without = Trainer(build_model("rnn", vocab_size=6, state_dim=4, embed_dim=4), build_guide("empty"))
    without.load_state_dict(trainer.state_dict())
    assert {(g["weight_decay"], g["betas"]) for g in without.optimizer.param_groups} == {(0.0, (0.9, 0.999))}


def test_the_trainer_does_not_trace_by_default():
    """A model whose training a JIT trace would freeze (scheduled sampling) trains under the defaults."""
    from pyroseq.data.batch import pad_batch

    model = build_model("rnn", vocab_size=6, state_dim=4, embed_dim=4, schedule={"kind": "linear", "c": 0.5})
    trainer = Trainer(model, build_guide("empty"))
    assert [trainer.step(pad_batch([[3, 4, 2]]))["teacher_prob"] for _ in range(2)] == [1.0, 0.5]


def test_a_signal_that_arrives_while_the_ranks_agree_on_stopping_is_not_lost(tmp_path, monkeypatch):
    """With several ranks, each step starts with an all-reduce of the stop flags, where ranks wait for
    each other, so that is where a SIGTERM usually lands: it must stop training at the next step instead
    of being overwritten by the agreement computed before it arrived (seen as an intermittent hang of the
    two-process SIGTERM test)."""
    original = Trainer._agreed_stop

    def agreeing(self, stopped_by):
        agreed = original(self, stopped_by)
        if self.step_count == 2 and stopped_by is None:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives inside the agreement, after its result
            (lambda: None)()  # a Python call: the handler runs here, before the result is returned
        return agreed

    monkeypatch.setattr(Trainer, "_agreed_stop", agreeing)
    stopped = train_run(RunConfig(**{**TINY, "checkpoint_every": 0}), tmp_path / "run", progress=False)
    assert stopped["stopped_by"] == "SIGTERM" and stopped["steps"] == 3


@pytest.mark.parametrize("model", ["dssm", "rnn"])
@pytest.mark.parametrize("data", ["words", "text"])
def test_a_new_run_starts_its_emitter_at_the_unigram_law(tmp_path, model, data):
    """emitter_bias="unigram" (the default) sets the logit layer's bias to the training data's log symbol
    frequencies (words weighted by p(w)) before the first step, for every model alike; "default" leaves
    nn.Linear's own draw."""
    extra = {"source": "sample", "chunk_length": 16} if data == "text" else {}
    config = RunConfig(**{**TINY, "model": model, "data": data, "steps": 1, "lr": 1e-9, **extra})
    train_run(config, tmp_path / "unigram", progress=False)
    run = load_run(tmp_path / "unigram")
    corpus = run.corpus()
    if data == "words":
        expected = unigram_log_frequencies(
            corpus.batch().ids, len(corpus.vocab), weights=torch.as_tensor(corpus.counts, dtype=torch.float64)
        )
    else:
        expected = unigram_log_frequencies(corpus.ids("train"), len(corpus.vocab))
    bias = emitter_output_layer(run.model).bias.detach()
    real = torch.isfinite(expected)
    assert torch.allclose(bias[real], expected[real], atol=1e-4)  # one step at lr 1e-9 moves nothing
    train_run(dataclasses.replace(config, emitter_bias="default"), tmp_path / "default", progress=False)
    drawn = emitter_output_layer(load_run(tmp_path / "default").model).bias.detach()
    assert not torch.allclose(drawn[real], expected[real], atol=0.1)


@pytest.mark.parametrize("source", ["sample", "text"])
def test_data_parallel_ranks_draw_streams_of_their_own_apart_from_validation(source, tmp_path):
    """Four ranks of one run: each draws other training batches than every other rank and than the
    validation batch (a rank seeded like validation, or two ranks seeded alike, would train on copies)."""
    from pyroseq.runs.config import load_corpus
    from pyroseq.runs.train import _training_data

    if source == "text":
        path = tmp_path / "text.txt"
        path.write_text("".join(f"line {i} of a text with some words in it\n" for i in range(400)))
        config = RunConfig(
            model="rnn", data="text", source=str(path), batch_size=8, valid_size=8, chunk_length=16
        )
    else:
        config = RunConfig(source="sample", batch_size=64, valid_size=64)  # frequent words repeat
    corpus = load_corpus(config)
    streams, valid = [], None
    for rank in range(4):
        sampler, valid, _, _ = _training_data(config, corpus, torch.device("cpu"), rank=rank)
        streams.append([next(sampler).ids for _ in range(3)])
    batches = [batch for stream in streams for batch in stream]
    assert not any(a.shape == valid.ids.shape and torch.equal(a, valid.ids) for a in batches)
    for i, a in enumerate(batches):
        assert not any(a.shape == b.shape and torch.equal(a, b) for b in batches[i + 1 :])
