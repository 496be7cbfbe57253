"""``evaluate_run``: the library call behind ``pyroseq evaluate``, and the command as its printer."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pyroseq.cli.common import to_jsonable
from pyroseq.cli.main import cli
from pyroseq.errors import ConfigError
from pyroseq.evaluate import evaluate_run
from pyroseq.runs import RunConfig, train_run

TINY = dict(
    source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8, batch_size=8,
    valid_every=3, valid_size=16, checkpoint_every=3, steps=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def dssm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dssm"
    train_run(RunConfig(**TINY), out, progress=False)
    return out


def _figures(result: dict) -> dict:
    return {k: v for k, v in to_jsonable(result).items() if k != "cpu_seconds"}


def test_the_command_prints_what_evaluate_run_returns(dssm_run):
    options = dict(num_samples=3, bound_words=8, bound_ks=(1, 10, 100), noise_samples=2, seed=5)
    result = evaluate_run(dssm_run, **options)
    assert {"ce_nats", "kl_nats", "vocab_mass", "bounds", "noise"} <= set(result)
    assert set(result["bounds"]) >= {"elbo", "iwae_10", "iwae_100"}
    assert result["noise"]["plot"] == str(dssm_run / "noise_usage.png")
    out = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(dssm_run),
            "-k",
            "3",
            "--bound-words",
            "8",
            "--noise-samples",
            "2",
            "--seed",
            "5",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    printed = json.loads(out.output.strip().splitlines()[-1])
    assert _figures(printed) == _figures(result)
    assert f"CE   {result['ce_nats']:.4f}" in out.output


def test_evaluate_run_leaves_out_what_is_not_asked_for(dssm_run):
    result = evaluate_run(dssm_run, num_samples=2, bounds=False, noise=False, estimator="prior")
    assert "bounds" not in result and "noise" not in result and result["estimator"] == "prior"


def test_the_library_names_parameters_and_the_command_its_flags(dssm_run):
    with pytest.raises(
        ConfigError, match=r"^the jackknife needs at least 2 filter runs \(num_repeats\), got 1"
    ):
        evaluate_run(dssm_run, estimator="smc", num_repeats=1, jackknife=True, bounds=False, noise=False)
    out = CliRunner().invoke(
        cli, ["evaluate", str(dssm_run), "--estimator", "smc", "--repeats", "1", "--jackknife", "--no-noise"]
    )
    assert out.exit_code == 2
    assert "error: the jackknife needs at least 2 filter runs (--repeats), got 1" in out.output


def test_the_activity_of_the_noise_dimensions_is_asked_for_and_printed(dssm_run):
    options = dict(num_samples=2, bounds=False, noise=False, estimator="prior", seed=3)
    assert "activity" not in evaluate_run(dssm_run, **options)
    result = evaluate_run(dssm_run, activity=True, activity_words=12, **options)
    activity = result["activity"]
    assert activity["state_dim"] == 4 and activity["num_sequences"] == 12
    assert len(activity["dimension_activity"]) == 4 and 0 <= activity["num_active"] <= 4
    args = ["evaluate", str(dssm_run), "-k", "2", "--no-bounds", "--no-noise", "--estimator", "prior"]
    out = CliRunner().invoke(cli, [*args, "--seed", "3", "--activity", "--activity-words", "12"])
    assert out.exit_code == 0, out.output
    assert (
        f"active noise dimensions: {activity['num_active']} of 4 (activity > 0.01 on 12 words" in out.output
    )


def test_the_activity_is_refused_for_a_model_without_noise(tmp_path):
    """An RNN on words has no noise dimensions: --activity is refused, not silently left out."""
    config = RunConfig(model="rnn", source="sample", state_dim=4, embed_dim=4, batch_size=4, steps=1,
                       valid_size=4)  # fmt: skip
    train_run(config, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"^activity: this RNNLM has no noise \(its state is a function"):
        evaluate_run(tmp_path / "run", activity=True, num_samples=2)
    out = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run"), "--activity"])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: --activity: this RNNLM has no noise"), out.output
    assert "the activity of noise dimensions is measured for a state-space model" in out.output


def test_the_activity_needs_two_words(dssm_run):
    out = CliRunner().invoke(cli, ["evaluate", str(dssm_run), "--activity", "--activity-words", "1"])
    assert out.exit_code == 2 and "--activity-words" in out.output and "x>=2" in out.output, out.output


def test_the_activity_is_refused_off_the_word_task(tmp_path):
    config = RunConfig(data="text", source="sample", chunk_length=8, state_dim=4, embed_dim=4, flow_hidden=8,
                       emitter_hidden=8, guide_hidden=8, batch_size=4, steps=1, valid_size=4)  # fmt: skip
    train_run(config, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"^activity: the noise dimensions' activity is measured on words"):
        evaluate_run(tmp_path / "run", activity=True)
    out = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run"), "--activity"])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: --activity: the noise dimensions' activity is measured"), out.output
