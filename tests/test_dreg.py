"""Tests of DReG (pyroseq.infer.dreg): IWAE's value and model gradient, an unbiased guide gradient of lower
variance, on a Gaussian toy with known answers and on the DSSM with its future-conditioned guide."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import conditional_planar
from pyro.infer import SVI, RenyiELBO

from pyroseq.errors import ConfigError
from pyroseq.guides import FutureGuide
from pyroseq.infer import IWAE, DReG, ScaleLatents, make_objective
from tests.test_objectives import (
    BATCH,
    LAYOUTS,
    D,
    dssm_and_guide,
    layout,
)

# The Gaussian toy of benchmarks/dreg_snr.py, one independent copy per "sequence" b (so one backward pass
# gives B draws of each estimator): z ~ N(theta, 1), x ~ N(z, 1), guide q(z) = N(loc, scale^2); the
# posterior is N((theta + x) / 2, 1/2).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dreg_snr import LOC, NAMES, SCALE, THETA, X, toy_gradients  # noqa: E402


def iwae_gradient_by_quadrature(K, beta=1.0, nodes=40):
    """``grad of -E[IWAE_K]`` on the toy by Gauss-Hermite quadrature over the K noises, in float64; with
    ``beta``, of the annealed bound (``log w = log p(x | z) + beta (log p(z) - log q(z))``)."""
    eps, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-eps^2 / 2)
    eps, w = torch.tensor(eps), torch.tensor(w / w.sum())
    grid = torch.cartesian_prod(*[eps] * K).reshape(-1, K)  # (n^K, K)
    weight = torch.cartesian_prod(*[w] * K).reshape(-1, K).prod(-1)  # (n^K,)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (THETA, LOC, math.log(SCALE))]
    theta, loc, log_scale = params
    z = loc + log_scale.exp() * grid  # (n^K, K)
    x = torch.tensor(X, dtype=torch.float64)
    log_w = dist.Normal(z, 1.0).log_prob(x)
    log_w = log_w + beta * (
        dist.Normal(theta, 1.0).log_prob(z) - dist.Normal(loc, log_scale.exp()).log_prob(z)
    )
    loss = -(weight * (torch.logsumexp(log_w, -1) - math.log(K))).sum()
    return {n: float(g) for n, g in zip(NAMES, torch.autograd.grad(loss, params), strict=True)}


def test_the_quadrature_reference_is_the_analytic_elbo_gradient_at_k_1():
    # -ELBO = (loc - theta)^2 / 2 + (x - loc)^2 / 2 + scale^2 - log scale + const
    reference = iwae_gradient_by_quadrature(1)
    assert reference["theta"] == pytest.approx(THETA - LOC, abs=1e-10)
    assert reference["loc"] == pytest.approx((LOC - THETA) - (X - LOC), abs=1e-10)
    assert reference["scale"] == pytest.approx(2 * SCALE**2 - 1, abs=1e-10)


@pytest.mark.parametrize("K, beta", [(1, 1.0), (2, 1.0), (2, 0.3)])
def test_dreg_is_unbiased_for_the_iwae_gradient(K, beta):
    """Both estimators' means over 20,000 draws lie within 4 standard errors of the quadrature value, for
    the bound and (``beta < 1``) for the bound under KL annealing."""
    reference = iwae_gradient_by_quadrature(K, beta)
    for objective in (IWAE(num_particles=K), DReG(num_particles=K)):
        with ScaleLatents(beta):
            grads = toy_gradients(objective, 20_000)
        for name in NAMES:
            g = grads[name]
            error = 4 * float(g.std()) / math.sqrt(len(g))
            assert float(g.mean()) == pytest.approx(reference[name], abs=error), (type(objective), name)


def test_dreg_guide_gradient_is_zero_at_the_exact_posterior():
    """There ``log w`` is constant in z, so every draw of DReG's guide gradient is 0; IWAE's is not."""
    posterior = dict(loc=(THETA + X) / 2, scale=math.sqrt(0.5))
    dreg = toy_gradients(DReG(num_particles=4), 100, **posterior)
    iwae = toy_gradients(IWAE(num_particles=4), 100, **posterior)
    for name in ("loc", "scale"):
        assert dreg[name].abs().max() < 1e-5
        assert iwae[name].abs().mean() > 0.1


def snr_and_sd(grads):
    return float(grads.mean().abs() / grads.std()), float(grads.std())


def test_dreg_guide_gradient_has_lower_variance_and_its_snr_does_not_decay_with_k():
    """Rainforth et al.: IWAE's guide SNR falls like 1/sqrt(K); DReG's grows (measured at B = 2,000 draws:
    loc SNR IWAE 0.21 -> 0.06, DReG 1.02 -> 2.5 from K = 4 to 1024)."""
    measured = {}
    for K in (4, 1024):
        for objective in (IWAE(num_particles=K), DReG(num_particles=K)):
            grads = toy_gradients(objective, 2_000)
            for name in ("loc", "scale"):
                measured[type(objective).__name__, K, name] = snr_and_sd(grads[name])
    for name in ("loc", "scale"):
        for K in (4, 1024):
            assert measured["DReG", K, name][1] < 0.5 * measured["IWAE", K, name][1]
        assert measured["IWAE", 1024, name][0] < 0.5 * measured["IWAE", 4, name][0]
        assert measured["DReG", 1024, name][0] > measured["DReG", 4, name][0]


def split_gradients(objective, model, guide, model_params, guide_params):
    pyro.set_rng_seed(7)
    for p in model_params() + guide_params():
        p.grad = None
    value = objective.loss_and_grads(model, guide, BATCH.ids, BATCH.mask)
    return value, [p.grad.clone() for p in model_params()], [p.grad.clone() for p in guide_params()]


@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("layout_name", LAYOUTS)
def test_dreg_value_and_model_gradient_are_iwae_s(K, layout_name):
    """Same draws: the loss is RenyiELBO(alpha=0)'s and IWAE's, the model gradient IWAE's, the guide's not."""
    model, guide, nesting, model_params, guide_params = layout(layout_name)

    renyi = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=nesting)
    expected = split_gradients(renyi, model, guide, model_params, guide_params)
    iwae = split_gradients(
        IWAE(num_particles=K, max_plate_nesting=nesting), model, guide, model_params, guide_params
    )
    dreg = split_gradients(
        DReG(num_particles=K, max_plate_nesting=nesting), model, guide, model_params, guide_params
    )
    assert dreg[0] == pytest.approx(expected[0], rel=1e-5)
    assert dreg[0] == pytest.approx(iwae[0], rel=1e-5)
    for g, e in zip(dreg[1], iwae[1], strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)
    assert all(torch.isfinite(g).all() for g in dreg[2])
    assert not all(torch.allclose(g, e, rtol=1e-3, atol=1e-5) for g, e in zip(dreg[2], iwae[2], strict=True))
    assert all(p.requires_grad for p in guide_params())


def test_dreg_drives_svi_with_the_future_guide():
    model, guide = dssm_and_guide()
    objective = make_objective("dreg", particles=3)
    assert isinstance(objective, DReG)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), objective)
    losses = [svi.step(BATCH.ids, BATCH.mask) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert all(p.requires_grad for p in guide.parameters())
    loss = objective.differentiable_loss(model, guide, BATCH.ids, BATCH.mask)
    loss.backward()
    assert all(p.grad is not None for p in guide.parameters() if p is not guide.embed.weight)


def test_dreg_refuses_a_guide_that_cannot_score_a_given_value():
    """A planar flow has no inverse: the guide cannot score the aliased draw; its parameters stay live."""
    model, _ = dssm_and_guide()
    rnn_hidden = 6
    guide = FutureGuide(
        vocab_size=model.vocab_size,
        state_dim=D,
        flow=conditional_planar(D, D + rnn_hidden),
        rnn_hidden=rnn_hidden,
    )
    with pytest.raises(ConfigError, match="cannot score a value it did not draw"):
        DReG(num_particles=2).differentiable_loss(model, guide, BATCH.ids, BATCH.mask)
    assert all(p.requires_grad for p in guide.parameters())


# A two-site guide whose second draw depends on the first: z1 ~ N(a, s1^2), z2 ~ N(c z1 + d, s2^2), for the
# model z1 ~ N(0, 1), z2 ~ N(z1, 1), x ~ N(z2, 1).
CHAIN = {"a": 0.2, "log_s1": -0.3, "c": 0.4, "d": 0.1, "log_s2": -0.5}


def chain_model(x):
    with pyro.plate("seqs", len(x), dim=-1):
        z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
        z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
        pyro.sample("x", dist.Normal(z2, 1.0), obs=x)


def chain_guide(x):
    p = {name: pyro.param(name, torch.tensor(value)) for name, value in CHAIN.items()}
    with pyro.plate("seqs", len(x), dim=-1):
        z1 = pyro.sample("z1", dist.Normal(p["a"], p["log_s1"].exp()))
        pyro.sample("z2", dist.Normal(p["c"] * z1 + p["d"], p["log_s2"].exp()))


def test_dreg_guide_gradient_is_the_doubly_reparameterised_estimator_on_the_same_draws():
    """By hand: ``sum_k wt_k^2 d log w_k(z(phi); phibar) / d phi`` through both draws' paths, the noise
    read back from the draws that DReG made."""
    K, x = 5, torch.tensor([0.7, -1.2, 2.0])
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    loss = DReG(num_particles=K).differentiable_loss(chain_model, chain_guide, x)
    params = [pyro.param(name).unconstrained() for name in CHAIN]
    grads = torch.autograd.grad(loss, params)

    pyro.set_rng_seed(3)
    particles = pyro.plate("num_particles_vectorized", K, dim=-2)
    drawn = pyro.poutine.trace(particles(chain_guide)).get_trace(x)
    z1, z2 = (drawn.nodes[name]["value"].detach() for name in ("z1", "z2"))  # (K, B) each
    a, log_s1, c, d, log_s2 = params
    eps1 = (z1 - a) / log_s1.exp()
    eps2 = (z2 - c * z1 - d) / log_s2.exp()
    z1 = a + log_s1.exp() * eps1.detach()  # the reparameterised path
    z2 = c * z1 + d + log_s2.exp() * eps2.detach()
    fixed = [p.detach() for p in params]
    log_q = dist.Normal(fixed[0], fixed[1].exp()).log_prob(z1)
    log_q = log_q + dist.Normal(fixed[2] * z1 + fixed[3], fixed[4].exp()).log_prob(z2)
    log_p = (
        dist.Normal(0.0, 1.0).log_prob(z1)
        + dist.Normal(z1, 1.0).log_prob(z2)
        + dist.Normal(z2, 1.0).log_prob(x)
    )
    log_w = log_p - log_q  # (K, B)
    expected = torch.autograd.grad(-(torch.softmax(log_w.detach(), 0) ** 2 * log_w).sum(), params)
    for name, g, e in zip(CHAIN, grads, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-6), name


def masked(fn, m, how):
    """``fn`` (a latent site's law) masked by ``m``: by ``dist.mask`` or by ``poutine.mask``."""
    if how == "distribution":
        return pyro.sample("z", fn.mask(m))
    with pyro.poutine.mask(mask=m):
        return pyro.sample("z", fn)


def masked_model(x, m, how):
    with pyro.plate("seqs", len(x), dim=-1):
        z = masked(dist.Normal(0.0, 1.0), m, how)
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def masked_guide(x, m, how):
    loc = pyro.param("loc", torch.full(x.shape, 0.3))
    with pyro.plate("seqs", len(x), dim=-1):
        masked(dist.Normal(loc, 0.6), m, how)


@pytest.mark.parametrize("how", ["distribution", "handler"])
def test_dreg_keeps_iwae_s_guide_gradient_where_a_mask_removes_the_score_term(how):
    """Where the latent sites are masked out, log w = log p(x | z) has no score term: DReG is IWAE, draw for
    draw; elsewhere it is not."""
    x, m = torch.linspace(-1.0, 1.0, 6), torch.tensor([True, False, True, False, False, True])
    grads = []
    for objective in (IWAE(num_particles=3), DReG(num_particles=3)):
        pyro.clear_param_store()
        pyro.set_rng_seed(5)
        loss = objective.differentiable_loss(masked_model, masked_guide, x, m, how)
        grads.append(torch.autograd.grad(loss, [pyro.param("loc").unconstrained()])[0])
    iwae, dreg = grads
    assert torch.allclose(dreg[~m], iwae[~m], atol=1e-6)
    assert not torch.allclose(dreg[m], iwae[m], atol=1e-3)
