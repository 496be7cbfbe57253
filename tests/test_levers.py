"""The lever screen (benchmarks/levers.py) and its plot (benchmarks/plot_levers.py) at a tiny size."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyroseq.models import DSSM

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
DSSM_DEFAULT_FLOW = inspect.signature(DSSM).parameters["flow"].default


def screen(tmp_path, *options):
    out = tmp_path / "levers.jsonl"
    command = [sys.executable, str(BENCHMARKS / "levers.py"), "--source", "sample", "--top", "50",
               "--state-dim", "4", "--steps", "4", "--every", "2", "--batch-size", "8", "--eval-k", "3",
               "--out", str(out), *options]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize(
    "options, estimator, trained_by",
    [
        (("--model", "rnn"), "exact", "Trace_ELBO"),
        (("--objective", "dreg", "--particles", "2"), "iwae", "DReG"),
        (("--free-bits", "1", "--kl-warmup", "0"), "iwae", "FreeBitsELBO"),
        (("--objective", "fivo", "--particles", "2"), "iwae", "FIVO"),
    ],
)
def test_a_screen_appends_its_curve_and_figures(tmp_path, options, estimator, trained_by):
    (record,) = screen(tmp_path, *options)
    assert (record["estimator"], record["trained_by"]) == (estimator, trained_by)
    assert [point[0] for point in record["curve"]] == [2, 4]  # every 2 steps, up to the budget
    assert record["ce"] == record["curve"][-1][2] > 0
    assert record["curve"][0][1] <= record["curve"][1][1] == record["train_cpu_s"]
    assert record["options"]["steps"] == 4 and record["options"]["source"] == "sample"
    # the flow trained is named even where the library's default was left
    assert record["model_flow"] == (None if "rnn" in options else DSSM_DEFAULT_FLOW)


def test_a_screen_records_the_flow_it_was_given(tmp_path):
    (record,) = screen(tmp_path, "--flow", "coupling", "--particles", "2")
    assert record["model_flow"] == "coupling" == record["options"]["flow"]


def test_a_particle_schedule_steps_k_up_and_the_last_k_holds(tmp_path):
    (record,) = screen(tmp_path, "--objective", "dreg", "--particle-schedule", "2:2", "3:3")
    assert record["options"]["particles"] == 2  # the first K
    assert record["particles_at_end"] == 3  # step 4, past the last K's step: it holds


@pytest.mark.parametrize(
    "schedule, message",
    [(("4:10", "8:5"), "the steps must rise, got 4:10 8:5"), (("4",), "K:STEP with two integers, got '4'")],
)
def test_a_bad_particle_schedule_is_refused_with_what_was_given(schedule, message):
    command = [sys.executable, str(BENCHMARKS / "levers.py"), "--particle-schedule", *schedule]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and message in done.stderr


def test_the_plot_draws_every_recorded_run(tmp_path):
    screen(tmp_path, "--model", "rnn")
    screen(tmp_path, "--objective", "dreg", "--particles", "2")
    png = tmp_path / "curves.png"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "plot_levers.py"), "--results", str(tmp_path / "levers.jsonl"),
         "--state-dim", "4", "--steps", "4", "--out", str(png)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert png.stat().st_size > 10_000
