"""Tests of the emitter-bias initialiser (pyroseq.models.init): the unigram law at any state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pyroseq.data import Vocabulary, pad_batch
from pyroseq.errors import ConfigError, DataError
from pyroseq.guides import FutureGuide
from pyroseq.models import (
    DSSM,
    MODELS,
    AutoregressiveModel,
    build_model,
    emitter_output_layer,
    init_emitter_bias,
    unigram_log_frequencies,
)
from pyroseq.models.init import init_frame_bias

VOCAB = Vocabulary("abc")  # PAD, BOS, EOS, a, b, c
WORDS = ["ab", "a", "aab", "ba"]  # a 5, b 3, c 0, EOS 4
BATCH = pad_batch([VOCAB.encode(w) for w in WORDS])
SMALL = {
    "dssm": dict(state_dim=4, flow_hidden=4, emitter_hidden=8),
    "rnn": dict(state_dim=4, embed_dim=4),
    "professor": dict(state_dim=4, embed_dim=4, disc_hidden=4),
}


def test_unigram_log_frequencies_are_smoothed_counts_without_pad_and_bos():
    log_f = unigram_log_frequencies(BATCH.ids, len(VOCAB), smoothing=0.5)
    counts = {VOCAB.eos_id: 4.5, VOCAB.encode("a", add_eos=False)[0]: 5.5}
    counts |= {VOCAB.encode("b", add_eos=False)[0]: 3.5, VOCAB.encode("c", add_eos=False)[0]: 0.5}
    total = sum(counts.values())  # 14
    assert log_f[VOCAB.pad_id] == log_f[VOCAB.bos_id] == -math.inf
    for symbol, count in counts.items():
        assert float(log_f[symbol]) == pytest.approx(math.log(count / total), abs=1e-6)


def test_weights_count_each_row_that_many_times():
    weights = torch.tensor([3, 1, 2, 5])
    repeated = torch.cat([BATCH.ids[b : b + 1].expand(int(n), -1) for b, n in enumerate(weights)])  # (11, T)
    expected = unigram_log_frequencies(repeated, len(VOCAB), smoothing=0.25)
    weighted = unigram_log_frequencies(BATCH.ids, len(VOCAB), weights=weights, smoothing=0.25)
    assert torch.allclose(weighted, expected)
    with pytest.raises(DataError, match="one count per row"):
        unigram_log_frequencies(BATCH.ids, len(VOCAB), weights=weights[:2])


@pytest.mark.parametrize(
    "name, kwargs",
    [(name, SMALL[name]) for name in MODELS]
    + [("dssm", dict(state_dim=4, flow_hidden=4, emitter_hidden=None))],
    ids=[*MODELS, "dssm-linear-emitter"],
)
def test_with_zero_emitter_weights_every_state_emits_the_unigram_law(name, kwargs):
    model = build_model(name, vocab_size=len(VOCAB), **kwargs)
    log_f = init_emitter_bias(model, BATCH.ids)
    output = [m for m in model.emitter.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.isfinite(output.bias).all()  # PAD and BOS get 0, which the model masks anyway
    nn.init.zeros_(output.weight)
    with torch.no_grad():
        if isinstance(model, AutoregressiveModel):
            logits = model.teacher_forced_logits(BATCH.ids)  # (B, T, V): every prefix
        else:
            logits = model.emission_logits(torch.randn(7, model.state_dim))  # (7, V): any state
    expected = log_f.exp().expand(logits.shape)
    assert torch.allclose(logits.softmax(-1), expected, atol=1e-6)


def test_init_emitter_bias_refuses_a_module_without_an_emitter():
    guide = FutureGuide(vocab_size=len(VOCAB), state_dim=4)
    with pytest.raises(ConfigError, match="FutureGuide has no emitter"):
        init_emitter_bias(guide, BATCH.ids)
    model = build_model("dssm", vocab_size=len(VOCAB), state_dim=4, emitter_hidden=None)
    model.emitter = nn.Linear(4, len(VOCAB), bias=False)
    with pytest.raises(ConfigError, match=r"DSSM.emitter's output layer has no bias"):
        init_emitter_bias(model, BATCH.ids)


def test_init_emitter_bias_refuses_bad_ids_and_smoothing():
    model = build_model("rnn", vocab_size=len(VOCAB), state_dim=4)
    with pytest.raises(DataError, match="not a symbol of a vocabulary of size 6"):
        init_emitter_bias(model, torch.tensor([[3, 9]]))
    with pytest.raises(ConfigError, match="smoothing must be positive"):
        init_emitter_bias(model, BATCH.ids, smoothing=0.0)


def test_init_frame_bias_starts_a_bernoulli_emitter_at_each_keys_frequency():
    """With the last layer's weights at zero, p(key on) at any state is the smoothed frequency of the key."""
    frames = torch.zeros(10, 4)
    frames[:5, 0] = 1.0  # key 0 on in half the frames, key 1 in all, keys 2-3 never
    frames[:, 1] = 1.0
    model = DSSM(emission="bernoulli", obs_dim=4, state_dim=3, flow="diagonal")
    log_odds = init_frame_bias(model, frames, smoothing=0.5)
    torch.nn.init.zeros_(emitter_output_layer(model).weight)
    probs = model.emitter.distribution(torch.randn(7, 3)).mean  # (7, 4)
    expected = torch.tensor([5.5 / 11, 10.5 / 11, 0.5 / 11, 0.5 / 11])
    assert torch.allclose(probs, expected.expand(7, 4), atol=1e-6)
    assert torch.allclose(log_odds, torch.logit(expected), atol=1e-6)
    with pytest.raises(ConfigError, match="Bernoulli emitter"):
        init_frame_bias(DSSM(vocab_size=5, state_dim=3), frames)
    with pytest.raises(ConfigError, match="3 columns"):
        init_frame_bias(model, frames[:, :3])
