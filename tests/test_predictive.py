"""Predictive checks: Predictive draws (not echoes), lengths, ArviZ data, the check command."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.data import pad_batch
from pyroseq.data.words import load_words
from pyroseq.guides import GaussianGuide
from pyroseq.infer.config import RunConfig
from pyroseq.infer.run import train_run
from pyroseq.models import DSSM, RNNLM
from pyroseq.predictive import check_words, draw, plot_ppc, sequence_lengths, to_inferencedata


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
    reps = draw(model, guide, batch, num_samples=5)
    assert reps.shape == (5, 8, corpus.max_length)
    assert not torch.equal(reps[0], batch.ids)  # an untrained model does not reproduce the data
    assert not torch.equal(reps[0], reps[1])
    assert reps.min() >= 2  # never PAD or BOS


def test_to_inferencedata_groups():
    idata = to_inferencedata({"length": np.ones((3, 4))}, {"length": np.ones(4)})
    assert idata.posterior_predictive["length"].shape == (1, 3, 4)
    assert idata.observed_data["length"].shape == (4,)


def test_plot_ppc_leaves_the_backend_and_pyplot_alone(tmp_path, monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt

    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("plot_ppc switched the backend"))
    figures = plt.get_fignums()
    rng = np.random.default_rng(0)
    idata = to_inferencedata({"length": rng.integers(1, 6, (4, 8))}, {"length": rng.integers(1, 6, 8)})
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
