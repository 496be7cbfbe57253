"""Tests of the objectives (pyroseq.infer.objectives): the differentiable IWAE against Pyro's RenyiELBO."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, RenyiELBO
from pyro.infer.autoguide import AutoNormal

from pyroseq.data.batch import pad_batch
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError
from pyroseq.guides import FutureGuide
from pyroseq.infer import IWAE, make_objective
from pyroseq.models.dssm import DSSM

VOCAB = Vocabulary("abc")
D = 3
BATCH = pad_batch([VOCAB.encode(w) for w in ["ab", "c", "abca", "ba", "cc"]])


def dssm_and_guide():
    model = DSSM(vocab_size=len(VOCAB), state_dim=D, flow_hidden=8, emitter_hidden=8)
    guide = FutureGuide(vocab_size=len(VOCAB), state_dim=D, embed_dim=4, rnn_hidden=6, flow_hidden=8)
    return model, guide


def sequence_level_model(ids, mask):
    """One latent site per sequence with event shape (T, D), the layout of a whole-trajectory site."""
    B, T = mask.shape
    with pyro.plate("seqs", B, dim=-1):
        z = pyro.sample("trajectory", dist.Normal(torch.zeros(T, D), 1.0).to_event(2))  # (..., B, T, D)
        logits = pyro.param("emit", torch.randn(D, len(VOCAB))) * 1.0
        pyro.sample("words", dist.Categorical(logits=z @ logits).mask(mask).to_event(1), obs=ids)


def nested_plate_model(ids, mask):
    """A per-sequence latent and the words in a plate over steps nested inside the sequence plate."""
    B, T = mask.shape
    with pyro.plate("seqs", B, dim=-1):
        z = pyro.sample("z", dist.Normal(torch.zeros(D), 1.0).to_event(1))  # (..., B, D)
        logits = z @ pyro.param("emit", torch.randn(D, len(VOCAB)))  # (..., B, V)
        with pyro.plate("steps", T, dim=-2):
            pyro.sample("w", dist.Categorical(logits=logits).mask(mask.T), obs=ids.T)  # (..., T, B)


LAYOUTS = ["dssm", "sequence_site", "nested_plate"]


def layout(name):
    """``(model, guide, nesting, model_params, guide_params)`` of a layout every objective is checked on:
    the DSSM with its guide, a whole-trajectory site per sequence, and a plate nested in the sequence
    plate (both with ``AutoNormal``); the parameter lists are read when called (an autoguide's exist
    after its first call, made here)."""
    nesting = 2 if name == "nested_plate" else 1
    if name == "dssm":
        model, guide = dssm_and_guide()
        return model, guide, nesting, lambda: list(model.parameters()), lambda: list(guide.parameters())
    model = sequence_level_model if name == "sequence_site" else nested_plate_model
    guide = AutoNormal(model, init_scale=0.3)
    guide(BATCH.ids, BATCH.mask)  # create the autoguide's parameters

    def guide_params():
        return [v.unconstrained() for k, v in pyro.get_param_store().items() if k.startswith("AutoNormal")]

    return model, guide, nesting, lambda: [pyro.param("emit").unconstrained()], guide_params


def loss_and_grads(objective, model, guide, params):
    pyro.set_rng_seed(7)
    for p in params():
        p.grad = None
    value = objective.loss_and_grads(model, guide, BATCH.ids, BATCH.mask)
    return value, [p.grad.clone() for p in params()]


@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("layout_name", LAYOUTS)
def test_iwae_value_and_gradients_equal_renyi_elbo_alpha_0(K, layout_name):
    model, guide, nesting, model_params, guide_params = layout(layout_name)

    def params():
        return model_params() + guide_params()

    renyi = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=nesting)
    iwae = IWAE(num_particles=K, max_plate_nesting=nesting)
    expected, expected_grads = loss_and_grads(renyi, model, guide, params)
    value, grads = loss_and_grads(iwae, model, guide, params)
    assert value == pytest.approx(expected, rel=1e-5)
    assert len(grads) == len(expected_grads) > 0
    for g, e in zip(grads, expected_grads, strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)

    pyro.set_rng_seed(7)
    differentiable = iwae.differentiable_loss(model, guide, BATCH.ids, BATCH.mask)
    assert differentiable.requires_grad
    assert float(differentiable.detach()) == pytest.approx(expected, rel=1e-5)


def test_iwae_gives_one_bound_per_sequence():
    model, guide = dssm_and_guide()
    log_w = IWAE(num_particles=3).log_weights(model, guide, BATCH.ids, BATCH.mask)
    assert log_w.shape == (3, len(BATCH))
    # Sequence b's weights depend on sequence b only: changing another word leaves them alone.
    ids = BATCH.ids.clone()
    ids[0, 0] = VOCAB.encode("c", add_eos=False)[0]
    pyro.set_rng_seed(1)
    a = IWAE(num_particles=3).log_weights(model, guide, BATCH.ids, BATCH.mask)
    pyro.set_rng_seed(1)
    b = IWAE(num_particles=3).log_weights(model, guide, ids, BATCH.mask)
    assert not torch.allclose(a[:, 0], b[:, 0])
    assert torch.allclose(a[:, 1:], b[:, 1:])


def test_iwae_drives_a_plain_pytorch_loop():
    model, guide = dssm_and_guide()
    iwae = IWAE(num_particles=4).differentiable_loss
    params = list(model.parameters()) + list(guide.parameters())
    optimizer = torch.optim.Adam(params, lr=0.02)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = iwae(model, guide, BATCH.ids, BATCH.mask) / len(BATCH)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) < sum(losses[:5])


def test_iwae_drives_svi_and_is_the_iwae_objective():
    model, guide = dssm_and_guide()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), IWAE(num_particles=2))
    assert torch.isfinite(torch.tensor(svi.step(BATCH.ids, BATCH.mask)))
    assert isinstance(make_objective("iwae", particles=3), IWAE)


def test_iwae_refuses_a_site_outside_the_sequence_plate():
    def model(ids, mask):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("seqs", ids.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(0.0, scale), obs=ids[:, 0].float())

    guide = AutoNormal(model)
    with pytest.raises(ConfigError, match="'scale' lies outside the plate 'seqs'"):
        IWAE(num_particles=2).differentiable_loss(model, guide, BATCH.ids, BATCH.mask)


def test_iwae_refuses_a_guide_site_without_reparameterisation():
    def model(ids, mask):
        with pyro.plate("seqs", ids.shape[0], dim=-1):
            pyro.sample("c", dist.Bernoulli(0.5))

    def guide(ids, mask):
        p = pyro.param("p", torch.tensor(0.3))
        with pyro.plate("seqs", ids.shape[0], dim=-1):
            pyro.sample("c", dist.Bernoulli(p))

    with pytest.raises(ConfigError, match="'c' .* is not reparameterised"):
        IWAE(num_particles=2).differentiable_loss(model, guide, BATCH.ids, BATCH.mask)


def test_fivo_is_a_named_objective_for_state_space_models_only_and_without_a_warm_up():
    from pyroseq.infer import FIVO, Trainer
    from pyroseq.models import RNNLM

    objective = make_objective("fivo", particles=3)
    assert isinstance(objective, FIVO) and objective.num_particles == 3
    with pytest.raises(ConfigError, match="no JIT version of the FIVO"):
        make_objective("fivo", particles=3, jit=True)
    model, guide = DSSM(vocab_size=5, state_dim=2), FutureGuide(vocab_size=5, state_dim=2)
    trainer = Trainer(model, guide, objective="fivo")
    assert trainer.kl_warmup == 0 and trainer.loss.num_particles == 8  # the recipe's K, and no warm-up
    with pytest.raises(ConfigError, match="set kl_warmup=0 \\(got 100\\)") as refused:
        Trainer(model, guide, objective="fivo", kl_warmup=100)
    assert refused.value.params == ("objective", "kl_warmup")
    with pytest.raises(ConfigError, match="RNNLM has no states for objective 'fivo' to filter"):
        Trainer(RNNLM(vocab_size=5), None, objective="fivo")
    with pytest.raises(ConfigError, match="kl_warmup_start=0.2 has no effect .* objective 'fivo' needs"):
        Trainer(model, guide, objective="fivo", kl_warmup_start=0.2)


def test_a_run_by_fivo_starts_without_a_warm_up_and_a_model_without_states_is_refused():
    from pyroseq.runs.config import RunConfig, resolve_kl_warmup

    assert resolve_kl_warmup(RunConfig(objective="fivo")).kl_warmup == 0  # a new run, not --init-from
    assert resolve_kl_warmup(RunConfig(objective="dreg")).kl_warmup > 0
    with pytest.raises(ConfigError, match="model rnn has no states") as refused:
        RunConfig(model="rnn", objective="fivo").validate()
    assert refused.value.params == ("objective", "model")
    assert refused.value.naming({}).startswith("--model rnn has no states for --objective 'fivo' to filter")
