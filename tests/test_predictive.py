"""Predictive checks: Predictive draws (not echoes), lengths, ArviZ data, the check command."""

import json
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.data import pad_batch
from pyroseq.data.words import load_words
from pyroseq.errors import ConfigError
from pyroseq.guides import GaussianGuide
from pyroseq.models import DSSM, RNNLM
from pyroseq.predictive import (
    PredictiveDraws,
    check_words,
    plot_ppc,
    posterior_predictive,
    prior_predictive,
    sequence_lengths,
)
from pyroseq.runs.config import RunConfig
from pyroseq.runs.train import train_run


@pytest.fixture(scope="module")
def corpus():
    return load_words("sample")


def test_sequence_lengths_stop_at_eos_and_mask():
    ids = torch.tensor([[3, 4, 2, 0], [3, 3, 3, 3], [2, 5, 5, 2]])
    assert sequence_lengths(ids).tolist() == [2, 4, 0]
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    assert sequence_lengths(ids, mask).tolist() == [2, 2, 0]


@pytest.mark.parametrize("kind", ["dssm", "rnn"])
def test_draws_are_sampled_not_echoed(corpus, kind):
    V = len(corpus.vocab)
    model = (
        DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8)
        if kind == "dssm"
        else RNNLM(vocab_size=V)
    )
    guide = GaussianGuide(vocab_size=V, state_dim=4, rnn_hidden=8) if kind == "dssm" else None
    batch = corpus.batch(range(8))
    draws = posterior_predictive(model, guide, batch, num_samples=5)
    assert draws.kind == ("posterior" if kind == "dssm" else "prior")
    reps = draws.ids
    assert reps.shape == (5, 8, corpus.max_length)
    assert not torch.equal(reps[0], batch.ids)  # an untrained model does not reproduce the data
    assert not torch.equal(reps[0], reps[1])
    real = reps[:, :, 0]
    assert real.min() >= 2  # never PAD or BOS on a replicate's first step
    after = (reps == 2).long().cumsum(-1) - (reps == 2).long() > 0
    assert (reps[after] == 0).all()  # cut at the first EOS


class ShiftingDSSM(DSSM):
    """A DSSM whose transition is h_t = h_{t-1} + 10 (almost surely): states it made are recognisable."""

    def transition(self, h_prev):
        return dist.Normal(h_prev + 10.0, 1e-3).to_event(1)


def test_posterior_replicates_use_the_guide_then_the_models_transition(corpus):
    """On observed steps the states are the guide's; past the observed end they continue by the model's
    transition (they were the guide's N(0, I) draws there, which the model never trained)."""
    V = len(corpus.vocab)
    model = ShiftingDSSM(vocab_size=V, state_dim=2, flow_hidden=4, emitter_hidden=None)
    batch = corpus.batch(range(6))
    B, T = batch.mask.shape
    fixed = torch.randn(B, T, 2)

    def guide(ids, mask):
        with pyro.plate("seqs", B, dim=-1):
            pyro.sample("h", dist.Delta(fixed, event_dim=2))

    draws = posterior_predictive(model, guide, batch, num_samples=3)
    states = draws.states  # (S, B, T, D)
    real = batch.mask[None].expand(3, B, T)
    assert torch.equal(states[real], fixed.expand(3, B, T, 2)[real])
    steps = states[..., 1:, :] - states[..., :-1, :]  # (S, B, T-1, D)
    padded = ~batch.mask[:, 1:]
    assert padded.any()
    torch.testing.assert_close(steps[:, padded], torch.full_like(steps[:, padded], 10.0), atol=0.02, rtol=0)
    logits = model.emission_logits(fixed)  # (B, T, V)
    expected = torch.log_softmax(logits.double(), -1).gather(-1, batch.ids[..., None]).squeeze(-1)
    expected = expected.masked_fill(~batch.mask, 0).sum(-1)
    torch.testing.assert_close(draws.log_likelihood, expected.expand(3, B))
    assert "transition after the observed end" in draws.drawn


def test_posterior_predictive_idata_has_named_dims_and_runs_loo_and_waic(corpus):
    import arviz as az

    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8)
    guide = GaussianGuide(vocab_size=V, state_dim=4, rnn_hidden=8)
    batch = corpus.batch(range(8))
    idata = posterior_predictive(model, guide, batch, num_samples=6).to_inferencedata()
    assert idata.posterior_predictive["w"].dims == ("chain", "draw", "seq", "step")
    assert idata.posterior_predictive["w"].shape == (1, 6, 8, corpus.max_length)
    assert idata.observed_data["w"].dims == ("seq", "step")
    assert idata.log_likelihood["word"].dims == ("chain", "draw", "seq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k: each word has its own states
        for stat in (az.loo(idata), az.waic(idata)):
            assert np.isfinite(stat.iloc[0]) and stat.iloc[0] < 0


def test_prior_predictive_has_no_log_likelihood(corpus):
    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8)
    draws = prior_predictive(model, corpus.batch(range(4)), num_samples=3)
    assert draws.kind == "prior" and draws.log_likelihood is None
    assert "log_likelihood" not in draws.to_inferencedata().groups()


def test_posterior_predictive_of_a_state_space_model_needs_its_guide(corpus):
    model = DSSM(vocab_size=len(corpus.vocab), state_dim=4)
    with pytest.raises(ConfigError, match="needs the guide"):
        posterior_predictive(model, None, corpus.batch(range(2)), num_samples=2)


def test_plot_ppc_leaves_the_backend_and_pyplot_alone(tmp_path, monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt

    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("plot_ppc switched the backend"))
    figures = plt.get_fignums()
    rng = np.random.default_rng(0)
    batch = pad_batch([[3] * int(n) + [2] for n in rng.integers(1, 6, 8)])
    reps = pad_batch([[3] * int(n) + [2] for n in rng.integers(1, 6, 32)], max_length=batch.ids.shape[1])
    idata = PredictiveDraws("prior", "", reps.ids.view(4, 8, -1), batch).to_inferencedata()
    path = plot_ppc(idata, tmp_path / "ppc.png")
    assert path.is_file() and path.stat().st_size > 0
    assert plt.get_fignums() == figures


def test_check_words_on_a_model_that_knows_one_word():
    """An RNN trained on a single word replicates it: lengths match, every replicate is a word."""
    corpus_words = ["abc"]
    from pyroseq.data import Vocabulary
    from pyroseq.guides import empty_guide
    from pyroseq.infer.trainer import Trainer

    vocab = Vocabulary.from_texts(corpus_words)
    model = RNNLM(vocab_size=len(vocab), state_dim=8)
    batch = pad_batch([vocab.encode("abc")] * 16)
    trainer = Trainer(model, empty_guide, lr=0.05)
    for _ in range(60):
        trainer.step(batch)
    model.eval()
    summary, idata = check_words(model, empty_guide, batch, vocab, corpus_words, num_samples=10)
    assert summary["in_vocabulary_fraction"] > 0.95
    assert summary["replicated_mean_length"] == pytest.approx(3.0, abs=0.1)
    assert summary["observed_mean_length"] == 3.0  # symbols before EOS
    assert idata.posterior_predictive["length"].shape == (1, 10, 16)


def test_check_command(tmp_path):
    config = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8,
                       batch_size=8, steps=2, valid_size=8)  # fmt: skip
    train_run(config, tmp_path / "run", progress=False)
    out = CliRunner().invoke(
        cli, ["check", str(tmp_path / "run"), "--words", "8", "--samples", "3", "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["kind"] == "posterior" and (tmp_path / "run" / "ppc_posterior_length.png").is_file()
    assert "transition after the observed end" in result["drawn"]
    out = CliRunner().invoke(
        cli, ["check", str(tmp_path / "run"), "--words", "4", "--samples", "2", "--prior"]
    )
    assert out.exit_code == 0 and out.output.startswith("prior predictive check"), out.output


@pytest.mark.parametrize("model, refused, accepted", [("rnn", "iwae", "exact"), ("dssm", "prior", "iwae")])
def test_evaluate_refuses_an_estimator_it_would_ignore_on_text(tmp_path, model, refused, accepted):
    config = RunConfig(data="text", source="sample", model=model, chunk_length=8, state_dim=4, embed_dim=4,
                       flow_hidden=8, emitter_hidden=8, guide_hidden=8, batch_size=4, steps=1,
                       valid_size=4)  # fmt: skip
    train_run(config, tmp_path / "run", progress=False)
    args = ["evaluate", str(tmp_path / "run"), "--samples", "2", "--estimator"]
    out = CliRunner().invoke(cli, [*args, refused])
    assert out.exit_code == 2 and out.output.startswith("error: --estimator"), out.output
    if model == "dssm":
        out = CliRunner().invoke(cli, [*args, "exact"])
        assert out.exit_code == 2 and f"use {accepted}" in out.output, out.output
    out = CliRunner().invoke(cli, [*args, accepted, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["nll_nats"] > 0


def test_evaluate_command_defaults_to_the_guide_iwae_on_a_dssm_and_reports_noise_usage(tmp_path):
    config = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8,
                       batch_size=8, steps=2, valid_size=8)  # fmt: skip
    train_run(config, tmp_path / "run", progress=False)
    args = ["evaluate", str(tmp_path / "run"), "--samples", "3", "--bound-words", "4", "--noise-samples", "3"]
    out = CliRunner().invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert (result["estimator"], result["samples"]) == ("iwae", 3)
    assert "estimator: iwae (K=3)" in out.output
    noise = result["noise"]
    assert {"mutual_information_nats", "mutual_information_stderr", "mutual_information_quartiles",
            "entropy_nats", "entropy_stderr", "plot"} <= set(noise)  # fmt: skip
    out = CliRunner().invoke(cli, [*args, "--estimator", "prior", "--no-noise", "--no-bounds", "--json"])
    assert json.loads(out.output.strip().splitlines()[-1])["estimator"] == "prior"


@pytest.mark.parametrize("eos_logit, p_value", [(50.0, 0.0), (-50.0, 1.0)])
def test_p_value_is_the_chance_of_replicates_at_least_as_long_as_the_data(corpus, eos_logit, p_value):
    """A model that always ends at once (every replicate shorter than the data) has p = 0; one that
    never ends (every replicate as long as the batch allows) has p = 1: P(rep mean >= observed mean)."""
    from pyroseq.data import Vocabulary
    from pyroseq.guides import empty_guide

    vocab = Vocabulary.from_texts(["ab", "ba", "abba"])
    model = RNNLM(vocab_size=len(vocab), state_dim=4)
    with torch.no_grad():
        model.emitter.weight.zero_()
        model.emitter.bias.zero_()
        model.emitter.bias[Vocabulary.eos_id] = eos_logit
    model.eval()
    batch = pad_batch([vocab.encode(w) for w in ["ab", "ba", "abba"]])
    summary, _ = check_words(model, empty_guide, batch, vocab, ["ab"], num_samples=5)
    assert summary["observed_mean_length"] == pytest.approx(8 / 3)
    assert summary["p_value_mean_length"] == p_value
