"""KL annealing: ScaleLatents weights the latent sites only, and the Trainer warms beta up to 1."""

import json
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from click.testing import CliRunner
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyroseq.cli.main import cli
from pyroseq.data.words import load_words
from pyroseq.errors import ConfigError
from pyroseq.guides import FutureGuide, empty_guide
from pyroseq.infer import (
    IWAE,
    PosteriorCollapseWarning,
    ScaleLatents,
    Trainer,
    check_collapse,
    latent_kl,
    warmup_factor,
)
from pyroseq.models import DSSM, RNNLM


@pytest.fixture
def setup():
    corpus = load_words("sample")
    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8)
    guide = FutureGuide(vocab_size=V, state_dim=4, flow_hidden=8, rnn_hidden=8)
    return model, guide, next(corpus.sampler(8, seed=0))


def _terms(model, guide, batch):
    """``E_q[log p(w | h)]`` and ``E_q[log p(h) - log q(h | w)]`` of one guide draw, summed over the batch."""
    guide_trace = poutine.trace(guide).get_trace(batch.ids, batch.mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch.ids, batch.mask)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    likelihood = sum(
        site["log_prob_sum"]
        for site in model_trace.nodes.values()
        if site["type"] == "sample" and site["is_observed"]
    )
    latent = model_trace.nodes["h"]["log_prob_sum"] - guide_trace.nodes["h"]["log_prob_sum"]
    return float(likelihood.detach()), float(latent.detach())


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_scaled_elbo_is_the_likelihood_plus_beta_times_the_kl_term(setup, beta):
    model, guide, batch = setup
    torch.manual_seed(1)
    likelihood, latent = _terms(model, guide, batch)
    torch.manual_seed(1)  # the same guide draw
    with ScaleLatents(beta):
        loss = Trace_ELBO(max_plate_nesting=1).loss(model, guide, batch.ids, batch.mask)
    assert loss == pytest.approx(-(likelihood + beta * latent), rel=1e-5)


def test_scaled_iwae_weights_scale_the_latent_part_of_each_log_weight(setup):
    model, guide, batch = setup
    iwae = IWAE(num_particles=3)
    with torch.no_grad():
        torch.manual_seed(2)
        full = iwae.log_weights(model, guide, batch.ids, batch.mask)
        torch.manual_seed(2)
        with ScaleLatents(0.0):
            likelihood = iwae.log_weights(model, guide, batch.ids, batch.mask)
        torch.manual_seed(2)
        with ScaleLatents(0.25):
            quarter = iwae.log_weights(model, guide, batch.ids, batch.mask)
    torch.testing.assert_close(quarter, likelihood + 0.25 * (full - likelihood))
    assert not torch.allclose(full, likelihood)  # the latent part is not zero, so the check has teeth


def test_bad_factors_and_warmup_values_are_refused():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
            ScaleLatents(bad)
    with pytest.raises(ConfigError, match=">= 0"):
        warmup_factor(0, -1)
    assert [warmup_factor(s, 3) for s in range(4)] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0, 1.0]
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="kl_warmup_start .* must be in \\[0, 1\\]"):
            warmup_factor(0, 3, start=bad)
    # from a start: Pyro's DMM example anneals from 0.2, min_af + (1 - min_af) * (step + 1) / N
    assert [warmup_factor(s, 4, start=0.2) for s in range(5)] == pytest.approx([0.4, 0.6, 0.8, 1.0, 1.0])
    assert warmup_factor(7, 0, start=0.2) == 1.0  # no warm-up: the plain bound


def test_trainer_warms_beta_up_and_validates_the_unscaled_bound(setup):
    model, guide, batch = setup
    trainer = Trainer(model, guide, objective="elbo", kl_warmup=4, total_steps=10)
    scales = [trainer.step(batch)["kl_scale"] for _ in range(6)]
    assert scales == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    torch.manual_seed(3)
    validation = trainer.evaluate_loss(batch)
    torch.manual_seed(3)
    assert validation == pytest.approx(
        Trace_ELBO(max_plate_nesting=1).loss(model, guide, batch.ids, batch.mask) / len(batch)
    )
    assert "kl_scale" not in Trainer(model, guide, kl_warmup=0, total_steps=10).step(batch)
    started = Trainer(model, guide, objective="elbo", kl_warmup=4, kl_warmup_start=0.6, total_steps=10)
    assert [started.step(batch)["kl_scale"] for _ in range(5)] == pytest.approx([0.7, 0.8, 0.9, 1.0, 1.0])
    with pytest.raises(ConfigError, match="kl_warmup_start"):
        Trainer(model, guide, kl_warmup=4, kl_warmup_start=2.0)


def test_a_plain_svi_step_under_scale_latents_takes_the_scaled_loss(setup):
    """The handler around ``svi.step`` (a user's own loop) gives the annealed objective."""
    model, guide, batch = setup
    torch.manual_seed(4)
    likelihood, latent = _terms(model, guide, batch)
    svi = SVI(model, guide, Adam({"lr": 1e-3}), Trace_ELBO(max_plate_nesting=1))
    torch.manual_seed(4)
    with ScaleLatents(0.1):
        loss = svi.step(batch.ids, batch.mask)  # the loss is computed before the update
    assert loss == pytest.approx(-(likelihood + 0.1 * latent), rel=1e-5)


def test_jit_and_negative_warmup_are_refused(setup):
    model, guide, _ = setup
    with pytest.raises(ConfigError, match="jit=True cannot be combined with kl_warmup"):
        Trainer(model, guide, jit=True, kl_warmup=5)
    with pytest.raises(ConfigError, match="kl_warmup must be >= 0"):
        Trainer(model, guide, kl_warmup=-1)


def test_cli_refuses_kl_warmup_for_an_rnn_and_logs_the_scale(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(
        cli,
        ["train", "--model", "rnn", "--source", "sample", "--kl-warmup", "3", "--out", str(tmp_path / "r")],
    )
    assert refused.exit_code == 2 and "--kl-warmup applies to --model dssm only" in refused.output
    refusals = (
        (["--model", "rnn"], "--kl-warmup-start applies to --model dssm only"),
        (["--kl-warmup", "0"], "--kl-warmup-start has no effect without a warm-up"),
    )
    for extra, why in refusals:
        refused = runner.invoke(cli, ["train", "--source", "sample", "--kl-warmup-start", "0.2", *extra,
                                      "--out", str(tmp_path / "s")])  # fmt: skip
        assert refused.exit_code == 2 and why in refused.output, refused.output
    args = [
        "train",
        "--source",
        "sample",
        "--state-dim",
        "4",
        "--batch-size",
        "8",
        "--steps",
        "4",
        "--kl-warmup",
        "2",
    ]
    done = runner.invoke(cli, [*args, "--out", str(tmp_path / "d"), "--no-progress"])
    assert done.exit_code == 0, done.output
    records = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kl_scale"] for r in records] == [0.5, 1.0, 1.0, 1.0]
    started = runner.invoke(
        cli, [*args, "--kl-warmup-start", "0.2", "--out", str(tmp_path / "e"), "--no-progress"]
    )
    assert started.exit_code == 0, started.output
    records = [json.loads(line) for line in (tmp_path / "e" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kl_scale"] for r in records] == pytest.approx([0.6, 1.0, 1.0, 1.0])
    assert json.loads((tmp_path / "e" / "config.json").read_text())["kl_warmup_start"] == 0.2


def test_new_dssm_runs_warm_up_by_default_and_runs_saved_before_the_option_resume_without(tmp_path):
    from pyroseq.runs.config import DEFAULT_KL_WARMUP, RunConfig, resolve_kl_warmup
    from pyroseq.runs.train import train_run

    assert resolve_kl_warmup(RunConfig(model="dssm", steps=10_000)).kl_warmup == DEFAULT_KL_WARMUP
    assert resolve_kl_warmup(RunConfig(model="dssm", steps=300)).kl_warmup == 150  # half of a short run
    assert resolve_kl_warmup(RunConfig(model="rnn")).kl_warmup == 0
    assert resolve_kl_warmup(RunConfig(model="dssm", kl_warmup=0)).kl_warmup == 0  # given: kept
    assert resolve_kl_warmup(RunConfig(model="dssm", jit=True)).kl_warmup == 0  # a trace would freeze beta
    tiny = dict(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8, batch_size=8)
    train_run(RunConfig(**tiny, steps=4, valid_every=0), tmp_path / "run", progress=False)
    config_path = tmp_path / "run" / "config.json"
    saved = json.loads(config_path.read_text())
    assert saved["kl_warmup"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kl_scale"] for r in records] == [0.5, 1.0, 1.0, 1.0]
    # A run directory written before the option existed: its config has no kl_warmup; it trained without.
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    del saved["kl_warmup"]
    config_path.write_text(json.dumps(saved))
    if "config" in checkpoint and isinstance(checkpoint["config"], dict):
        checkpoint["config"].pop("kl_warmup", None)
        torch.save(checkpoint, tmp_path / "run" / "checkpoint.pt")
    resumed = train_run(None, tmp_path / "run", resume=True, overrides={"steps": 6}, progress=False)
    assert resumed["steps"] == 6
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "kl_scale" not in records[-1]


# The collapse check


def test_latent_kl_is_the_objectives_kl_term_per_word(setup):
    model, guide, batch = setup
    torch.manual_seed(3)
    kl = latent_kl(model, guide, batch.ids, batch.mask)
    torch.manual_seed(3)
    _, latent = _terms(model, guide, batch)
    assert kl == pytest.approx(-latent / len(batch), rel=1e-5)


def test_check_collapse_warns_for_a_guide_that_is_the_prior_and_names_the_remedy(setup):
    """A guide that draws h from the model's own transition carries nothing: KL exactly 0."""
    model, _, batch = setup
    prior_guide = poutine.block(model, expose=["h"])
    with pytest.warns(PosteriorCollapseWarning, match=r"carry 0.000 nats per word.*ScaleLatents.*kl_warmup"):
        assert check_collapse(model, prior_guide, batch.ids, batch.mask) == pytest.approx(0.0, abs=1e-4)


def test_check_collapse_is_quiet_when_the_states_carry_the_words(setup):
    model, _, batch = setup
    T = batch.ids.shape[1]

    def sharp_guide(ids, mask):  # a narrow posterior far from the prior: many nats per word
        with pyro.plate("seqs", mask.shape[0], dim=-1):
            pyro.sample("h", dist.Normal(torch.full((T, 4), 3.0), 0.01).to_event(2))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_collapse(model, sharp_guide, batch.ids, batch.mask) > 10
        assert check_collapse(RNNLM(vocab_size=model.vocab_size), empty_guide, batch.ids, batch.mask) is None


def test_trainer_checks_for_collapse_once_after_the_warmup(setup, monkeypatch):
    """Every collapse_every steps after the warm-up, warned once; the threshold is raised here so that
    any model counts as collapsed."""
    import pyroseq.infer.trainer as trainer_module

    model, guide, batch = setup
    monkeypatch.setattr(trainer_module, "COLLAPSE_THRESHOLD", 1e9)
    trainer = Trainer(model, guide, kl_warmup=3, collapse_every=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(9):
            trainer.step(batch)
    collapse = [str(w.message) for w in caught if w.category is PosteriorCollapseWarning]
    assert len(collapse) == 1 and collapse[0].startswith("step 5: the latent states carry")
