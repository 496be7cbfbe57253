"""Tests of the filtering bound (pyroseq.infer.fivo): exact where the states do not matter, unbiased Z with
the guide proposing, IWAE's expectation without resampling."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import AutoNormal
from torch import nn

from pyroseq.data import Vocabulary, pad_batch
from pyroseq.errors import ConfigError
from pyroseq.guides import FutureGuide
from pyroseq.infer import FIVO, IWAE, ScaleLatents
from pyroseq.infer.smc import resample_below
from pyroseq.models import DSSM, RNNLM, emitter_output_layer, init_emitter_bias

VOCAB = Vocabulary("abc")
WORDS = ["ab", "c", "abca", "ba"]
D = 2


def state_blind_dssm(words):
    """A DSSM whose emission ignores the state (last emitter layer's weights 0, bias the unigram law):
    ``p(w) = prod_t f(w_t)`` exactly, whatever the states do."""
    model = DSSM(vocab_size=len(VOCAB), state_dim=D, flow_hidden=4, emitter_hidden=4)
    batch = pad_batch([VOCAB.encode(w) for w in words])
    log_f = init_emitter_bias(model, batch.ids)
    nn.init.zeros_(emitter_output_layer(model).weight)
    log_p = torch.where(batch.mask, log_f[batch.ids.clamp(min=VOCAB.eos_id)], 0.0).sum(-1)  # (B,)
    return model, batch, log_p


@pytest.mark.parametrize("N, ess_threshold", [(1, 0.0), (5, 0.0), (5, 1.0)])
def test_fivo_is_log_p_exactly_where_the_emission_ignores_the_state(N, ess_threshold):
    """The model as its own proposal: each incremental weight is p(w_t), so log Z = log p(w) draw by draw."""
    model, batch, log_p = state_blind_dssm(WORDS)
    log_z = FIVO(num_particles=N, ess_threshold=ess_threshold).log_evidence(
        model, model, batch.ids, batch.mask
    )
    assert torch.allclose(log_z, log_p, atol=1e-5)


@pytest.mark.parametrize("ess_threshold", [0.0, 1.0])
def test_fivo_z_is_unbiased_with_the_guide_proposing(ess_threshold):
    """E[Z / p(w)] = 1 over 3,000 independent filters (the guide is far from the posterior), within 4 SE."""
    model, batch, log_p = state_blind_dssm(["abca"] * 3000)
    guide = FutureGuide(vocab_size=len(VOCAB), state_dim=D, embed_dim=3, rnn_hidden=4, flow_hidden=4)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        log_z = FIVO(num_particles=3, ess_threshold=ess_threshold).log_evidence(
            model, guide, batch.ids, batch.mask
        )
    ratio = (log_z - log_p).exp()
    assert float(ratio.std()) > 0.01  # the guide's draws matter
    assert float(ratio.mean()) == pytest.approx(1.0, abs=4 * float(ratio.std()) / math.sqrt(len(ratio)))


def test_fivo_without_resampling_is_iwae_in_expectation():
    batch = pad_batch([VOCAB.encode("abca")] * 3000)
    model = DSSM(vocab_size=len(VOCAB), state_dim=D, flow_hidden=4, emitter_hidden=4)
    guide = FutureGuide(vocab_size=len(VOCAB), state_dim=D, embed_dim=3, rnn_hidden=4, flow_hidden=4)
    with torch.no_grad():  # a transition that depends on h_{t-1} (a new flow is near the identity) ...
        for p in model.transition_flow.parameters():
            p.normal_(0.0, 0.5)
        model.h_0.fill_(2.0)  # ... and the model's h_0 and the guide's differ: each law starts from its own
    pyro.set_rng_seed(0)
    with torch.no_grad():
        fivo = FIVO(num_particles=3, ess_threshold=0.0).log_evidence(model, guide, batch.ids, batch.mask)
        iwae = torch.logsumexp(
            IWAE(num_particles=3).log_weights(model, guide, batch.ids, batch.mask), 0
        ) - math.log(3)
    error = 4 * math.sqrt((fivo.var() + iwae.var()) / len(fivo))
    assert float(fivo.mean()) == pytest.approx(float(iwae.mean()), abs=error)


def test_fivo_drives_svi_and_trains_model_and_guide():
    batch = pad_batch([VOCAB.encode(w) for w in WORDS])
    model = DSSM(vocab_size=len(VOCAB), state_dim=D, flow_hidden=4, emitter_hidden=4)
    guide = FutureGuide(vocab_size=len(VOCAB), state_dim=D, embed_dim=3, rnn_hidden=4, flow_hidden=4)
    before = [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), FIVO(num_particles=4))
    assert all(math.isfinite(svi.step(batch.ids, batch.mask)) for _ in range(2))
    after = [*model.parameters(), *guide.parameters()]
    moved = [not torch.equal(a, b) for a, b in zip(after, before, strict=True)]
    assert sum(moved) >= len(moved) - 1  # all but the PAD row of the guide's embedding, which has no gradient


def test_fivo_refuses_a_model_without_states_and_a_guide_without_a_trajectory():
    batch = pad_batch([VOCAB.encode(w) for w in WORDS])
    with pytest.raises(ConfigError, match="RNNLM is not one"):
        FIVO().log_evidence(RNNLM(vocab_size=len(VOCAB)), None, batch.ids, batch.mask)
    model = DSSM(vocab_size=len(VOCAB), state_dim=D)
    with pytest.raises(ConfigError, match="a StateTrajectory; found"):
        FIVO().log_evidence(model, AutoNormal(model), batch.ids, batch.mask)


def test_fivo_is_the_bootstrap_filter_recursion_on_the_same_draws():
    """The model as its own proposal, resampling wherever the ESS falls below 0.9 N: by hand, with the
    filter's own resampling (pyroseq.infer.smc.resample_below), on the same random draws; value and
    gradient."""
    N, threshold = 4, 0.9
    model = DSSM(vocab_size=len(VOCAB), state_dim=D, flow_hidden=4, emitter_hidden=4)
    with torch.no_grad():
        emitter_output_layer(model).weight.mul_(4.0)  # emissions that depend strongly on the state
    batch = pad_batch([VOCAB.encode(w) for w in WORDS])
    B, T = batch.ids.shape
    pyro.set_rng_seed(11)
    log_z = FIVO(num_particles=N, ess_threshold=threshold).log_evidence(model, model, batch.ids, batch.mask)
    grads = torch.autograd.grad(log_z.sum(), list(model.parameters()))

    pyro.set_rng_seed(11)
    h = model.initial_state((N, B))  # (N, B, D): particles first, as FIVO draws them
    log_w, expected = torch.full((B, N), -math.log(N)), torch.zeros(B)
    for t in range(T):
        h = model.transition(h).rsample().transpose(0, 1)  # (B, N, D)
        symbols = batch.ids[:, t].clamp(min=VOCAB.eos_id)[:, None, None].expand(B, N, 1)
        log_alpha = torch.log_softmax(model.emission_logits(h), -1).gather(-1, symbols).squeeze(-1)
        increment = torch.logsumexp(log_w + log_alpha, -1)  # (B,)
        expected = expected + torch.where(batch.mask[:, t], increment, 0.0)
        h, log_w, _ = resample_below(h, log_w + log_alpha - increment[:, None], threshold)
        h = h.transpose(0, 1)
    assert torch.allclose(log_z, expected, atol=1e-5)
    expected_grads = torch.autograd.grad(expected.sum(), list(model.parameters()))
    for g, e in zip(grads, expected_grads, strict=True):
        assert torch.allclose(g, e, atol=1e-5)


def test_fivo_refuses_kl_warmup_instead_of_ignoring_it():
    """The filter scores the laws itself: under ScaleLatents it would train the unannealed bound silently."""
    model, batch, _ = state_blind_dssm(WORDS)
    with pytest.raises(ConfigError, match="FIVO does not anneal"), ScaleLatents(0.5):
        FIVO(num_particles=2).differentiable_loss(model, model, batch.ids, batch.mask)
    FIVO(num_particles=2).differentiable_loss(model, model, batch.ids, batch.mask)  # unscaled: fine


def frame_models(F=5, B=3000, T=4):
    """A Bernoulli DSSM over frames of F keys, its future-conditioned guide, and a padded batch of
    ``B`` random frame sequences of length up to ``T``."""
    model = DSSM(emission="bernoulli", obs_dim=F, state_dim=D, flow_hidden=4, emitter_hidden=4)
    guide = FutureGuide(obs_dim=F, state_dim=D, rnn_hidden=4, flow_hidden=4)
    generator = torch.Generator().manual_seed(3)
    frames = (torch.rand(B, T, F, generator=generator) < 0.3).float()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[: B // 2, T - 1] = False  # half the sequences one frame shorter
    frames[~mask] = 0.0
    return model, guide, frames, mask


@pytest.mark.parametrize("ess_threshold", [0.0, 1.0])
def test_fivo_on_frames_is_log_p_exactly_where_the_emission_ignores_the_state(ess_threshold):
    """A Bernoulli emission whose output layer ignores the state: log Z = sum over live frames of
    log Bernoulli(x_t; sigmoid(bias)), with the model as its own proposal, draw by draw."""
    model, _, frames, mask = frame_models(B=6)
    layer = emitter_output_layer(model)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.linspace(-2.0, 1.0, frames.shape[-1]))
    per_frame = torch.distributions.Bernoulli(logits=layer.bias).log_prob(frames).sum(-1)  # (B, T)
    log_p = torch.where(mask, per_frame, 0.0).sum(-1)
    log_z = FIVO(num_particles=4, ess_threshold=ess_threshold).log_evidence(model, model, frames, mask)
    assert torch.allclose(log_z, log_p.detach(), atol=1e-5)


def test_fivo_on_frames_without_resampling_is_iwae_in_expectation():
    """Frames as the model observes them (B, T, F), the guide proposing: FIVO without resampling and IWAE
    with the same N estimate the same bound."""
    model, guide, frames, mask = frame_models()
    with torch.no_grad():
        for p in model.transition_flow.parameters():
            p.normal_(0.0, 0.5)
        emitter_output_layer(model).weight.mul_(4.0)  # emissions that depend on the state
    pyro.set_rng_seed(0)
    with torch.no_grad():
        fivo = FIVO(num_particles=3, ess_threshold=0.0).log_evidence(model, guide, frames, mask)
        iwae = torch.logsumexp(IWAE(num_particles=3).log_weights(model, guide, frames, mask), 0) - math.log(3)
    assert float((fivo - iwae).abs().mean()) > 0.01  # not the same draws
    error = 4 * math.sqrt((fivo.var() + iwae.var()) / len(fivo))
    assert float(fivo.mean()) == pytest.approx(float(iwae.mean()), abs=error)


def test_fivo_takes_frames_as_the_model_does_and_ignores_what_pads_them():
    """Integer or bool frames are scored as the model scores them (as floats), and a padded frame of any
    finite value changes neither log Z nor its gradients."""
    _, _, frames, mask = frame_models(B=4)
    model = DSSM(emission="normal", obs_dim=frames.shape[-1], state_dim=D, flow_hidden=4, emitter_hidden=4)
    pyro.set_rng_seed(1)
    reference = FIVO(num_particles=3).log_evidence(model, model, frames, mask)
    for other in (frames.bool(), frames.to(torch.uint8), frames.masked_fill(~mask[..., None], 1e20)):
        pyro.set_rng_seed(1)
        log_z = FIVO(num_particles=3).log_evidence(model, model, other, mask)
        assert torch.allclose(log_z, reference)
        grads = torch.autograd.grad(log_z.sum(), list(model.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)


def test_fivo_refuses_a_guide_of_another_state_size_and_a_particle_count_that_is_not_a_count():
    batch = pad_batch([VOCAB.encode(w) for w in WORDS])
    model = DSSM(vocab_size=len(VOCAB), state_dim=D, flow_hidden=4, emitter_hidden=4)
    guide = FutureGuide(vocab_size=len(VOCAB), state_dim=D + 1, embed_dim=3, rnn_hidden=4, flow_hidden=4)
    with pytest.raises(ConfigError, match=f"give the guide state_dim={D}"):
        FIVO(num_particles=2).loss(model, guide, batch.ids, batch.mask)
    for bad in (2.5, True, 0):
        with pytest.raises(ConfigError, match="num_particles must be an integer N >= 1"):
            FIVO(num_particles=bad)
