"""The default DSSM and its future guide computed in plain PyTorch: the yardstick for Pyro's overhead.

Same model, same parameters, same noise as pyroseq's Pyro programs, with none of Pyro's programming model
(no sample sites, traces, distributions or param store): pyroseq's ``DSSM`` and ``FutureGuide`` are read
for their torch submodules and parameters, and their flows are used as the torch transforms that
``flow.condition(context)`` returns (so any flow works: the library's default four couplings or the
benchmark's triangular model flow, and a diagonal guide flow). Given a batch, :func:`log_weights` returns
the importance log-weights

    log w_{k,b} = sum_t [log p(w_t | h_t) + log p(h_t | h_{t-1}) - log q(h_t | h_{t-1}, w_{t:T})]

of K guide draws per sequence, and :func:`elbo_loss` / :func:`iwae_loss` the losses that pyroseq's
``Trace_ELBO`` and ``IWAE`` objectives compute from them. The guide draws its noise in the order
pyroseq's guide does (per step: the guide's noise, then the noise of a padded step), so the same torch
seed gives the same trajectories; ``tests/test_reference_dssm.py`` checks values and gradients.

    python benchmarks/reference_dssm.py     # one value check on a random batch
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["log_weights", "elbo_loss", "iwae_loss"]

SPECIAL_IDS = (0, 1)  # PAD and BOS: no model emits them


def _standard_normal(x: Tensor) -> Tensor:
    return -0.5 * (x.square().sum(-1) + x.shape[-1] * math.log(2 * math.pi))


def _log_det(transform, x: Tensor, y: Tensor) -> Tensor:
    """``log |det d y / d x|`` of a transform on vectors, ``(...,)`` (summed for element-wise ones)."""
    log_det = transform.log_abs_det_jacobian(x, y)
    return log_det.sum(-1) if transform.codomain.event_dim == 0 else log_det


def _modules(module: nn.Module) -> dict[str, nn.Module | Tensor]:
    """Submodules and parameters by name, read past ``PyroModule.__getattr__`` (no Pyro statements)."""
    return {**dict(module.named_modules()), **dict(module.named_parameters())}


def _future_summary(g: dict, ids: Tensor, mask: Tensor) -> Tensor:
    """``b_t``, the backward GRU's summary of ``w_{t:L}`` per sequence, ``(B, T, H)``."""
    B, T = ids.shape
    lengths = mask.sum(-1, keepdim=True)
    pos = torch.arange(T, device=ids.device).expand(B, T)
    reverse = torch.where(pos < lengths, lengths - 1 - pos, pos)
    summary, _ = g["future_rnn"](g["embed"](ids.gather(1, reverse)))
    return summary.gather(1, reverse.unsqueeze(-1).expand(B, T, summary.shape[-1]))


def _guide(g: dict, ids: Tensor, mask: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Draw ``h_{1:T}`` from the future guide; returns ``(h (*shape, T, D), log q (*shape,))``."""
    flow = g.get("posterior_flow")
    D = g["h_0"].shape[-1]
    future = _future_summary(g, ids, mask)  # (B, T, H)
    h = g["h_0"].expand(shape + (D,))
    b_all = future.expand(shape + future.shape[-2:])  # (*shape, T, H)
    weight = torch.cat([g["hidden_to_loc"].weight, g["hidden_to_scale"].weight])
    bias = torch.cat([g["hidden_to_loc"].bias, g["hidden_to_scale"].bias])
    T = ids.shape[1]
    noise = torch.randn((T,) + shape + (D,), dtype=h.dtype, device=h.device)  # every step's N(0, I)
    states, log_q = [], 0.0
    for t in range(T):
        b = b_all[..., t, :]
        hidden = 0.5 * (torch.tanh(g["state_to_hidden"](h)) + b)
        loc, scale = nn.functional.linear(hidden, weight, bias).chunk(2, dim=-1)
        scale = nn.functional.softplus(scale) + 1e-4
        eps = noise[t]
        xi = loc + scale * eps
        lq_t = _standard_normal(eps) - scale.log().sum(-1)
        if flow is None:
            h_t = xi
        else:
            transform = flow.condition(torch.cat([h, b], dim=-1))
            h_t = transform(xi)
            lq_t = lq_t - _log_det(transform, xi, h_t)
        real = mask[:, t]
        h = torch.where(real.unsqueeze(-1), h_t, eps)  # after the end: the noise itself, N(0, I)
        log_q = log_q + torch.where(real, lq_t, _standard_normal(eps))
        states.append(h)
    return torch.stack(states, dim=-2), log_q


def _model(m: dict, ids: Tensor, mask: Tensor, h: Tensor) -> Tensor:
    """``log p(w, h)`` per particle and sequence, all steps at once; ``h (*shape, T, D)``."""
    flow = m["transition_flow"]
    D = h.shape[-1]
    prev = torch.cat([m["h_0"].expand(h.shape[:-2] + (1, D)), h[..., :-1, :]], dim=-2)  # (*shape, T, D)
    transform = flow.condition(prev)  # every step at once
    xi = transform.inv(h)
    log_p = _standard_normal(xi) - _log_det(transform, xi, h)  # (*shape, T)
    log_p_h = torch.where(mask, log_p, _standard_normal(h)).sum(-1)
    logits = m["emitter"](h)  # (*shape, T, V)
    logits = logits.index_fill(-1, torch.tensor(SPECIAL_IDS, device=h.device), float("-inf"))
    log_p_w = torch.log_softmax(logits, dim=-1).gather(-1, ids.expand(h.shape[:-1]).unsqueeze(-1))
    return log_p_h + log_p_w.squeeze(-1).masked_fill(~mask, 0.0).sum(-1)


def log_weights(model: nn.Module, guide: nn.Module, ids: Tensor, mask: Tensor, *, particles: int) -> Tensor:
    """``log p(w, h^k) - log q(h^k | w)`` for ``particles`` guide draws per sequence, ``(K, B)``.

    ``particles=0`` draws one trajectory per sequence without a particle dimension, ``(B,)``, as
    pyroseq's ``Trace_ELBO`` does.
    """
    shape = (ids.shape[0],) if particles == 0 else (particles, ids.shape[0])
    h, log_q = _guide(_modules(guide), ids, mask, shape)
    return _model(_modules(model), ids, mask, h) - log_q


def elbo_loss(model: nn.Module, guide: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """``-ELBO`` summed over the batch, one draw per sequence (pyroseq's ``Trace_ELBO`` loss)."""
    return -log_weights(model, guide, ids, mask, particles=0).sum()


def iwae_loss(model: nn.Module, guide: nn.Module, ids: Tensor, mask: Tensor, *, particles: int) -> Tensor:
    """``-sum_b IWAE_K(b)`` (pyroseq's ``IWAE`` loss), K = ``particles``."""
    log_w = log_weights(model, guide, ids, mask, particles=particles)  # (K, B)
    return -(torch.logsumexp(log_w, dim=0) - math.log(particles)).sum()


if __name__ == "__main__":
    from pyroseq.data.words import load_words
    from pyroseq.guides import FutureGuide
    from pyroseq.infer.objectives import make_objective
    from pyroseq.models import DSSM

    corpus = load_words("sample")
    model, guide = DSSM(vocab_size=len(corpus.vocab)), FutureGuide(vocab_size=len(corpus.vocab))
    batch = next(corpus.sampler(64, seed=0))
    for particles in (1, 4):
        objective = make_objective("iwae" if particles > 1 else "elbo", particles=particles)
        torch.manual_seed(0)
        ours = float(objective.loss(model, guide, batch.ids, batch.mask))
        torch.manual_seed(0)
        with torch.no_grad():
            if particles > 1:
                reference = float(iwae_loss(model, guide, batch.ids, batch.mask, particles=particles))
            else:
                reference = float(elbo_loss(model, guide, batch.ids, batch.mask))
        print(f"K={particles}: pyroseq loss {ours:.6f}, reference {reference:.6f}")
