"""CUDA: a training step, evaluation and decoding on a GPU (marked ``gpu``; skipped without CUDA)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.runs.config import RunConfig
from pyroseq.runs.rundir import load_run
from pyroseq.runs.train import train_run

pytestmark = pytest.mark.gpu

TINY = dict(
    source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8, embed_dim=4,
    batch_size=16, valid_every=2, valid_size=16, checkpoint_every=2, steps=4,
)  # fmt: skip


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "run"
    summary = train_run(
        RunConfig(model="dssm", objective="iwae", particles=2, device="cuda", **TINY), out, progress=False
    )
    return out, summary


def test_training_steps_on_cuda_give_finite_losses_and_a_loadable_run(cuda_run):
    out, summary = cuda_run
    assert summary["steps"] == 4 and torch.isfinite(torch.tensor(summary["final_loss"]))
    run = load_run(out, device="cuda")
    assert all(p.is_cuda for p in run.model.parameters())
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_a_cuda_step_matches_a_cpu_step(tmp_path):
    """The same RNN run (no sampled noise) on CPU and CUDA for two steps: equal up to float rounding."""
    for device in ("cpu", "cuda"):
        config = RunConfig(model="rnn", device=device, **{**TINY, "steps": 2})
        train_run(config, tmp_path / device, progress=False)
    cpu, gpu = load_run(tmp_path / "cpu").model.state_dict(), load_run(tmp_path / "cuda").model.state_dict()
    for k in cpu:
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], rtol=1e-3, atol=1e-4, msg=k)


def test_evaluation_and_decoding_on_cuda(cuda_run):
    out, _ = cuda_run
    runner = CliRunner()
    result = runner.invoke(
        cli, ["evaluate", str(out), "--device", "cuda", "-k", "4", "--no-noise", "--bound-words", "32"]
    )
    assert result.exit_code == 0, result.output
    for decoder in ("ancestral", "beam"):
        result = runner.invoke(cli, ["sample", str(out), "--device", "cuda", "-n", "4", "--decoder", decoder])
        assert result.exit_code == 0, result.output


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_train_and_resume(tmp_path):
    config = RunConfig(model="dssm", device="cuda", devices=2, **TINY)
    summary = train_run(config, tmp_path / "run", progress=False)
    assert summary["processes"] == 2
    resumed = train_run(None, tmp_path / "run", resume=True, overrides={"steps": 6}, progress=False)
    assert resumed["steps"] == 6
    assert json.loads((tmp_path / "run" / "config.json").read_text())["devices"] == 2
