"""Tests of free bits (pyroseq.infer.freebits): known values on a point-mass guide, and the plain ELBO
wherever every KL term exceeds the floor."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyroseq.errors import ConfigError
from pyroseq.infer import FreeBitsELBO
from tests.test_objectives import (
    BATCH,
    LAYOUTS,
    dssm_and_guide,
    layout,
)

X = torch.tensor([0.3, -0.4, 1.0])
LOC = torch.tensor([0.0, 0.5, 2.0])  # KL = -log N(loc; 0, 1) = 0.919, 1.044, 2.919


def toy_model(x):
    with pyro.plate("seqs", len(x), dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def toy_guide(x):
    """A point mass at ``loc``: log q = 0, so each sequence's KL is exactly ``-log N(loc; 0, 1)``."""
    loc = pyro.param("loc", LOC.clone())
    with pyro.plate("seqs", len(x), dim=-1):
        pyro.sample("z", dist.Delta(loc))


def toy_loss_and_grad(objective):
    pyro.clear_param_store()
    loss = objective.differentiable_loss(toy_model, toy_guide, X)
    (grad,) = torch.autograd.grad(loss, [pyro.param("loc").unconstrained()])
    return float(loss.detach()), grad


def kl(loc):
    return 0.5 * loc**2 + 0.5 * math.log(2 * math.pi)


def test_free_bits_known_value_and_zero_kl_gradient_below_the_floor():
    loss, grad = toy_loss_and_grad(FreeBitsELBO(free_nats=1.5, num_particles=2))
    nll = -dist.Normal(LOC, 1.0).log_prob(X)  # -log p(x | z = loc)
    assert loss == pytest.approx(float(nll.sum() + 1.5 + 1.5 + kl(LOC[2])), abs=1e-5)
    # d/dloc: the likelihood's (loc - x) everywhere; the KL's (loc) only where KL = 2.92 > 1.5.
    assert torch.allclose(grad, (LOC - X) + torch.tensor([0.0, 0.0, 1.0]) * LOC, atol=1e-6)


@pytest.mark.parametrize("free_nats, floored", [(1.5, False), (2.0, True)])
def test_free_bits_batch_average_floors_the_mean_kl(free_nats, floored):
    """Mean KL 1.627: above a floor of 1.5 (the ELBO), below 2.0 (B * 2.0, no KL gradient)."""
    loss, grad = toy_loss_and_grad(FreeBitsELBO(free_nats=free_nats, batch_average=True))
    nll = -dist.Normal(LOC, 1.0).log_prob(X)
    penalty = 3 * free_nats if floored else float(kl(LOC).sum())
    assert loss == pytest.approx(float(nll.sum()) + penalty, abs=1e-5)
    assert torch.allclose(grad, (LOC - X) + (0.0 if floored else 1.0) * LOC, atol=1e-6)


def test_kl_terms_are_per_sequence_before_the_floor():
    pyro.clear_param_store()
    terms = FreeBitsELBO(free_nats=5.0).kl_terms(toy_model, toy_guide, X)
    assert list(terms) == ["z"]
    assert torch.allclose(terms["z"], kl(LOC), atol=1e-6)


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("layout_name", LAYOUTS)
def test_free_bits_is_the_elbo_where_every_kl_term_exceeds_the_floor(K, layout_name):
    """Same draws: value and every gradient equal ``Trace_ELBO``'s (vectorised particles)."""
    model, guide, nesting, model_params, guide_params = layout(layout_name)

    def params():
        return model_params() + guide_params()

    free_bits = FreeBitsELBO(free_nats=0.05, num_particles=K, max_plate_nesting=nesting)
    pyro.set_rng_seed(7)
    terms = free_bits.kl_terms(model, guide, BATCH.ids, BATCH.mask)
    assert min(float(t.min()) for t in terms.values()) > 0.05  # the premise: every term above the floor
    assert list(terms) == (
        ["h"] if layout_name == "dssm" else ["trajectory" if layout_name == "sequence_site" else "z"]
    )
    results = []
    for objective in (
        Trace_ELBO(num_particles=K, vectorize_particles=True, max_plate_nesting=nesting),
        free_bits,
    ):
        pyro.set_rng_seed(7)
        for p in params():
            p.grad = None
        value = objective.loss_and_grads(model, guide, BATCH.ids, BATCH.mask)
        results.append((value, [p.grad.clone() for p in params()]))
    (expected, expected_grads), (value, grads) = results
    assert value == pytest.approx(expected, rel=1e-5)
    for g, e in zip(grads, expected_grads, strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)


def test_free_bits_drives_svi_on_the_dssm():
    model, guide = dssm_and_guide()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), FreeBitsELBO(free_nats=3.0, num_particles=2))
    assert all(math.isfinite(svi.step(BATCH.ids, BATCH.mask)) for _ in range(3))


def test_free_bits_refuses_a_negative_floor_and_a_guide_without_reparameterisation():
    with pytest.raises(ConfigError, match="free_nats .* must be >= 0, got -1.0"):
        FreeBitsELBO(free_nats=-1.0)

    def model(x):
        with pyro.plate("seqs", len(x), dim=-1):
            pyro.sample("c", dist.Bernoulli(0.5))

    def guide(x):
        p = pyro.param("p", torch.tensor(0.3))
        with pyro.plate("seqs", len(x), dim=-1):
            pyro.sample("c", dist.Bernoulli(p))

    with pytest.raises(ConfigError, match="'c' .* is not reparameterised"):
        FreeBitsELBO(free_nats=1.0).differentiable_loss(model, guide, X)
