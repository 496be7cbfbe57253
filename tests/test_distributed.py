"""Data-parallel training (pyroseq.runs.distributed): two CPU processes with gloo against one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.data.batch import Batch
from pyroseq.errors import CheckpointError, ConfigError
from pyroseq.infer.trainer import Trainer
from pyroseq.models import init_emitter_bias
from pyroseq.runs.config import RunConfig, load_corpus
from pyroseq.runs.distributed import rank_seed
from pyroseq.runs.rundir import load_run
from pyroseq.runs.specs import build_from_specs, guide_spec, model_spec
from pyroseq.runs.train import train_run

pytest.importorskip("lightning_fabric")

TINY = dict(
    source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8, embed_dim=4,
    batch_size=4, valid_every=3, valid_size=16, checkpoint_every=3, steps=6,
)  # fmt: skip


def state(run_dir) -> dict[str, torch.Tensor]:
    return load_run(run_dir).model.state_dict()


def one_process_on_the_ranks_words(config: RunConfig, ranks: int) -> dict[str, torch.Tensor]:
    """One process trained on each step's batches of all ``ranks`` ranks together, in one batch."""
    corpus = load_corpus(config)
    torch.manual_seed(config.seed)
    model, guide = build_from_specs(model_spec(config, corpus.vocab), guide_spec(config, corpus.vocab))
    if config.emitter_bias == "unigram":  # as train_run starts a new run
        init_emitter_bias(
            model, corpus.batch().ids, weights=torch.as_tensor(corpus.counts, dtype=torch.float64)
        )
    trainer = Trainer(model, guide, lr=config.lr, lr_decay=config.lr_decay, total_steps=config.steps)
    samplers = [corpus.sampler(config.batch_size, seed=rank_seed(config.seed, r)) for r in range(ranks)]
    for _ in range(config.steps):
        batches = [next(s) for s in samplers]
        trainer.step(
            Batch(*(torch.cat(parts) for parts in zip(*(vars(b).values() for b in batches), strict=True)))
        )
    return model.state_dict()


def test_two_gloo_processes_train_to_the_parameters_of_one_process_on_their_combined_batch(tmp_path):
    config = RunConfig(model="rnn", devices=2, **TINY)
    summary = train_run(config, tmp_path / "ddp", progress=False)
    assert summary["processes"] == 2 and summary["steps"] == 6
    ddp = state(tmp_path / "ddp")
    alone = one_process_on_the_ranks_words(config, ranks=2)
    differences = {k: float((ddp[k] - alone[k]).abs().max()) for k in ddp}
    print("largest |2 processes - 1 process| per tensor:", json.dumps(differences))
    assert ddp.keys() == alone.keys()
    for k in ddp:
        torch.testing.assert_close(ddp[k], alone[k], rtol=1e-5, atol=1e-6, msg=k)
    # A single rank's words alone train elsewhere: the test sees the second rank's contribution.
    first_rank_only = one_process_on_the_ranks_words(config, ranks=1)
    assert any(not torch.allclose(ddp[k], first_rank_only[k], atol=1e-4) for k in ddp)


def ctrl_c_on_rank_1_at_batch(monkeypatch, n: int) -> None:
    """Rank 1 alone gets SIGINT (as from Ctrl-C) while drawing its n-th batch of this process."""
    from pyroseq.data import words

    original = words.WordSampler.__next__
    calls = {"n": 0}

    def drawing(self):
        calls["n"] += 1
        if os.environ.get("LOCAL_RANK") == "1" and calls["n"] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(words.WordSampler, "__next__", drawing)


@pytest.mark.parametrize("model", ["dssm", "rnn"])
def test_a_two_process_run_stopped_on_one_rank_and_resumed_equals_an_uninterrupted_one(
    tmp_path, monkeypatch, model
):
    config = RunConfig(model=model, devices=2, **{**TINY, "checkpoint_every": 0})
    train_run(config, tmp_path / "full", progress=False)
    ctrl_c_on_rank_1_at_batch(monkeypatch, 3)
    stopped = train_run(config, tmp_path / "half", progress=False)
    assert stopped["interrupted"] and stopped["steps"] == 3  # rank 0 stopped with rank 1
    monkeypatch.undo()
    resumed = train_run(None, tmp_path / "half", resume=True, progress=False)
    assert resumed["steps"] == 6 and resumed["steps_this_run"] == 3 and not resumed["interrupted"]
    a, b = state(tmp_path / "full"), state(tmp_path / "half")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    steps = [json.loads(x)["step"] for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # rank 0 alone logs


def test_a_two_process_run_directory_is_a_run_directory(tmp_path):
    train_run(RunConfig(model="dssm", devices=2, **TINY), tmp_path / "run", progress=False)
    runner = CliRunner()
    for args in (["sample", "-n", "3"], ["evaluate", "-k", "2", "--no-bounds", "--no-noise"]):
        result = runner.invoke(cli, [args[0], str(tmp_path / "run"), *args[1:]])
        assert result.exit_code == 0, result.output


def test_resume_on_another_number_of_processes_is_refused(tmp_path):
    train_run(RunConfig(model="rnn", devices=2, **{**TINY, "steps": 2}), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="trains on 2 processes .* resume it on as many"):
        train_run(None, tmp_path / "run", resume=True, overrides={"steps": 4, "devices": 1}, progress=False)


def test_professor_forcing_is_refused_on_several_processes():
    with pytest.raises(ConfigError, match="training professor .* devices=1"):
        RunConfig(model="rnn", training="professor", devices=2).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_devices_without_a_gpu_is_one_line_error(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["train", "--source", "sample", "--device", "cuda", "--devices", "2", "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda") and "no CUDA GPU" in lines[0]


def test_sigterm_to_the_launcher_stops_both_ranks_after_a_step_with_a_checkpoint(tmp_path):
    """The command as a scheduler sees it: SIGTERM to the process it started, which forwards it."""
    out = tmp_path / "run"
    args = ["train", "--model", "rnn", "--source", "sample", "--state-dim", "4", "--embed-dim", "4",
            "--batch-size", "4", "--steps", "100000", "--devices", "2", "--valid-every", "0",
            "--checkpoint-every", "0", "--no-progress", "--json", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyroseq", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )

    def training() -> bool:
        metrics = out / "metrics.jsonl"
        return metrics.is_file() and len(metrics.read_text().splitlines()) >= 2

    deadline = time.monotonic() + 600  # starting takes seconds, or minutes on a crowded machine
    while time.monotonic() < deadline and proc.poll() is None and not training():
        time.sleep(0.2)
    if not training():
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"the run did not start training (exit {proc.returncode}): {stderr.decode()[-2000:]}")
    proc.send_signal(signal.SIGTERM)
    try:
        stdout, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # a second signal: the launcher kills its ranks, none left behind
        proc.communicate(timeout=60)
        pytest.fail("the ranks did not stop within 120 s of SIGTERM")
    assert proc.returncode == 143
    summary = json.loads(stdout.decode().strip().splitlines()[-1])  # --json: the last line
    assert summary["stopped_by"] == "SIGTERM" and summary["processes"] == 2
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert load_run(out).step == summary["steps"] == steps[-1]
