"""The plain-PyTorch reference of the default DSSM and guide (benchmarks/reference_dssm.py) computes what
pyroseq's Pyro objectives compute: same values and gradients, given the same noise (the same torch seed).

In float64 they agree to 1e-9; the issue asks for 1e-5."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pyroseq.data.batch import pad_batch
from pyroseq.data.vocab import Vocabulary
from pyroseq.guides import FutureGuide
from pyroseq.infer.objectives import make_objective
from pyroseq.models import DSSM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference_dssm  # noqa: E402

VOCAB = Vocabulary("abcde")
WORDS = ["abc", "e", "deadbead", "bad", "cab", "a"]


def _modules(flow: str, guide_flow: str):
    torch.manual_seed(0)
    model = DSSM(vocab_size=len(VOCAB), state_dim=5, flow=flow, flow_hidden=12, emitter_hidden=12).double()
    guide = FutureGuide(
        vocab_size=len(VOCAB), state_dim=5, flow=guide_flow, flow_hidden=12, embed_dim=4, rnn_hidden=7
    ).double()
    with torch.no_grad():  # away from the near-identity initialisation, so every term matters
        for parameter in [*model.parameters(), *guide.parameters()]:
            parameter.add_(0.2 * torch.randn_like(parameter))
    return model, guide


def _loss_and_grads(loss_fn, model, guide, seed: int):
    for parameter in [*model.parameters(), *guide.parameters()]:
        parameter.grad = None
    torch.manual_seed(seed)
    loss = loss_fn()
    loss.backward()
    grads = {f"model.{n}": p.grad for n, p in model.named_parameters()}
    grads |= {f"guide.{n}": p.grad for n, p in guide.named_parameters()}
    return loss.detach(), grads


@pytest.mark.parametrize(
    "flows",
    [("triangular", "diagonal"), ("coupling", "none"), ("coupling+coupling", "diagonal")],
    ids=["benchmark", "other", "default"],
)
@pytest.mark.parametrize("particles", [1, 4])
def test_reference_equals_pyroseq_objectives(particles, flows):
    model, guide = _modules(*flows)
    batch = pad_batch([VOCAB.encode(w) for w in WORDS], max_length=11)  # padding after every word
    objective = make_objective("iwae" if particles > 1 else "elbo", particles=particles)
    if particles > 1:
        ours = lambda: objective.differentiable_loss(model, guide, batch.ids, batch.mask)  # noqa: E731
        theirs = lambda: reference_dssm.iwae_loss(  # noqa: E731
            model, guide, batch.ids, batch.mask, particles=particles
        )
    else:
        ours = lambda: objective.differentiable_loss(model, guide, batch.ids, batch.mask)  # noqa: E731
        theirs = lambda: reference_dssm.elbo_loss(model, guide, batch.ids, batch.mask)  # noqa: E731
    loss, grads = _loss_and_grads(ours, model, guide, seed=3)
    ref_loss, ref_grads = _loss_and_grads(theirs, model, guide, seed=3)
    torch.testing.assert_close(loss, ref_loss, atol=1e-9, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert grads[name] is not None and ref_grads[name] is not None, name
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-9, rtol=1e-7, msg=name)
    # another seed draws other trajectories: the agreement is not a coincidence of one draw
    other, _ = _loss_and_grads(theirs, model, guide, seed=4)
    assert abs(float(other - ref_loss)) > 1e-3
