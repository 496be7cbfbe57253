"""The guide diagnostics (benchmarks/guide_refit.py) on a tiny trained DSSM."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyroseq.runs import RunConfig, train_run

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("refit") / "dssm"
    config = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8,
                       batch_size=8, valid_size=8, steps=2, checkpoint_every=2, particles=2)  # fmt: skip
    train_run(config, run, progress=False)
    return run


def refit(run, tmp_path, *options):
    results = tmp_path / "refit.jsonl"
    command = [sys.executable, str(BENCHMARKS / "guide_refit.py"), str(run), "--every", "1", "--eval-k", "2",
               "--held", "2", "--bound-k", "1", "2", "4", "--json", str(results), *options]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    return record


@pytest.mark.parametrize("options", [("--steps", "2"), ("--local", "2")])
def test_each_measurement_has_ordered_bounds_and_the_record_keeps_the_curve(tiny_run, tmp_path, options):
    record = refit(tiny_run, tmp_path, *options)
    assert record["run_step"] == 2 and record["particles"] == 2 and record["objective"] == "dreg"
    assert [row["step"] for row in record["curve"]] == [0, 1, 2]
    for row in record["curve"]:
        # one set of draws serves every bound, nested groups: -ELBO >= -IWAE_2 >= -IWAE_4 on each word
        assert row["elbo"] >= row["iwae_2"] >= row["iwae_4"] > 0
        assert ("ce" in row) == (options[0] == "--steps")  # the CE is the networks' refit's alone
    assert record["curve"][0]["cpu_s"] == 0 <= record["curve"][1]["cpu_s"] <= record["curve"][-1]["cpu_s"]


def test_a_run_without_a_guide_is_refused(tmp_path):
    run = tmp_path / "rnn"
    config = RunConfig(source="sample", model="rnn", state_dim=4, batch_size=8, valid_size=8, steps=1)
    train_run(config, run, progress=False)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "guide_refit.py"), str(run)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "is a rnn run: only a DSSM has a guide to refit" in done.stderr


def test_the_offsets_reach_the_guide_inside_the_block_and_leave_it_after():
    import importlib.util

    import torch

    from pyroseq.guides import FutureGuide

    spec = importlib.util.spec_from_file_location("guide_refit", BENCHMARKS / "guide_refit.py")
    guide_refit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guide_refit)
    guide = FutureGuide(vocab_size=8, state_dim=2, rnn_hidden=3)
    ids, mask = torch.tensor([[3, 4, 2]]), torch.ones(1, 3, dtype=torch.bool)
    before = guide.future_summary(ids, mask)
    offset = torch.randn(1, 3, 3)
    with guide_refit.summary_offset(guide, offset):
        assert torch.equal(guide.future_summary(ids, mask), before + offset)
    assert torch.equal(guide.future_summary(ids, mask), before) and "future_summary" not in vars(guide)
