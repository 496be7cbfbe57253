"""Sequential Monte Carlo (a particle filter) for any :class:`~pyroseq.models.base.StateSpaceModel`.

For a batch of B symbol streams, each with its own N particles ``h^i`` and normalised weights ``wbar^i``,
one filter step moves every particle by a proposal (by default the model's transition) and reweights it
by the emission of the stream's next symbol:

    h_t^i ~ r(h_t | h_{t-1}^i)                                  (r = p(h_t | h_{t-1}) by default)
    g_t^i = p(w_t | h_t^i) p(h_t^i | h_{t-1}^i) / r(h_t^i | h_{t-1}^i)
    Z_t   = Z_{t-1} sum_i wbar_{t-1}^i g_t^i,      wbar_t^i ∝ wbar_{t-1}^i g_t^i

``Z_t`` is an unbiased estimate of ``q(w_1..w_t)``, the probability that a sequence starts with those
symbols, when the particles are resampled (systematically, per stream) whenever the effective sample size
``1 / sum_i (wbar^i)^2`` falls below ``ess_threshold * N`` (Del Moral 2004; Doucet & Johansen 2011).
Resampling sets the weights uniform and keeps ``Z``.

Pyro's :class:`pyro.infer.SMCFilter` is not used: it keeps one weight vector for the whole trace (a batch
of streams would share one weight and one resampling decision), it renormalises its weights by their
maximum without keeping the normaliser (so it gives no ``Z``), it cannot branch one cloud into several
children (the prefix tree), and it traces model and guide at every step. See ``docs/evaluation.md``.

References:
    A. Doucet, A. M. Johansen. A tutorial on particle filtering and smoothing: fifteen years later.
    Handbook of Nonlinear Filtering, 2011.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor

from pyroseq.checks import check_positive_sizes
from pyroseq.errors import ConfigError
from pyroseq.models.base import StateSpaceModel

__all__ = [
    "Particles",
    "Proposal",
    "effective_sample_size",
    "systematic_resample",
    "initial_particles",
    "propagate",
    "reweight",
    "resample_below",
    "filter_prefixes",
    "check_ess_threshold",
]

# A proposal r(h_t | h_{t-1}, w_t): called with (h_prev (B, N, D), symbols (B,), t); returns a distribution
# with batch shape (B, N) and event shape (D,).
Proposal = Callable[[Tensor, Tensor, int], TorchDistribution]


@dataclass(frozen=True)
class Particles:
    """B weighted particle clouds of N states each.

    Attributes:
        states: ``(B, N, D)``.
        log_weights: ``(B, N)`` float64, normalised (``logsumexp`` over N is 0).
        log_evidence: ``(B,)`` float64, ``log Z``: the estimate of ``log q(w_1..w_t)`` so far.
    """

    states: Tensor
    log_weights: Tensor
    log_evidence: Tensor

    @property
    def num_particles(self) -> int:
        return self.states.shape[1]


def check_ess_threshold(ess_threshold: float) -> None:
    """Raise :class:`ConfigError` unless ``0 <= ess_threshold <= 1`` (0: never resample, 1: always)."""
    if not 0.0 <= ess_threshold <= 1.0:
        raise ConfigError(
            f"ess_threshold must be in [0, 1] (a fraction of the particles), got {ess_threshold}"
        )


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """``1 / sum_i wbar_i^2`` of (not necessarily normalised) log-weights ``(..., N)``; returns ``(...)``."""
    wbar = torch.softmax(log_weights.double(), dim=-1)
    return 1.0 / (wbar * wbar).sum(-1)


def systematic_resample(log_weights: Tensor) -> Tensor:
    """Ancestor indices ``(..., N)`` by systematic resampling of each row of ``log_weights (..., N)``.

    One uniform ``u ~ U[0, 1)`` per row; index ``j`` is the particle whose cumulative weight interval
    contains ``(j + u) / N``. Each particle ``i`` is then drawn ``floor(N wbar_i)`` or ``ceil(N wbar_i)``
    times, and in expectation ``N wbar_i`` times (Kitagawa 1996).
    """
    N = log_weights.shape[-1]
    cumulative = torch.softmax(log_weights.double(), dim=-1).cumsum(-1)  # (..., N)
    u = torch.rand(*log_weights.shape[:-1], 1, dtype=torch.float64, device=log_weights.device)
    points = (torch.arange(N, dtype=torch.float64, device=log_weights.device) + u) / N  # (..., N)
    index = torch.searchsorted(cumulative.contiguous(), points.contiguous(), right=True)
    return index.clamp_(max=N - 1)  # float rounding can leave the last cumulative sum just below 1


def initial_particles(model: StateSpaceModel, batch_size: int, num_particles: int) -> Particles:
    """B clouds of N copies of ``h_0``, uniform weights, ``log Z = 0``."""
    check_positive_sizes(batch_size=batch_size, num_particles=num_particles)
    states = model.initial_state((batch_size, num_particles)).detach()  # (B, N, D)
    log_weights = torch.full(
        (batch_size, num_particles), -math.log(num_particles), dtype=torch.float64, device=states.device
    )
    return Particles(states, log_weights, torch.zeros(batch_size, dtype=torch.float64, device=states.device))


def propagate(
    model: StateSpaceModel,
    states: Tensor,
    *,
    proposal: Proposal | None = None,
    symbols: Tensor | None = None,
    t: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """Move particles ``(B, N, D)`` one step: by ``p(h_t | h_{t-1})``, or by ``proposal`` with its weight.

    Returns the new states and, with a proposal, the log-weight correction
    ``log p(h_t | h_{t-1}) - log r(h_t | h_{t-1}, w_t)``, ``(B, N)`` float64 (None without one: the
    transition's density cancels).
    """
    if proposal is None:
        return model.transition(states).sample(), None
    q = proposal(states, symbols, t)
    new = q.sample()
    correction = model.transition(states).log_prob(new).double() - q.log_prob(new).double()
    return new, correction


def reweight(log_weights: Tensor, log_likelihood: Tensor) -> tuple[Tensor, Tensor]:
    """Multiply normalised weights ``(B, N)`` by ``exp(log_likelihood) (B, N)``.

    Returns the renormalised log-weights and ``log sum_i wbar^i g^i`` ``(B,)``, the increment of ``log Z``.
    A stream whose every particle has likelihood 0 gets increment ``-inf`` and uniform weights.
    """
    unnormalised = log_weights + log_likelihood.double()  # (B, N)
    increment = torch.logsumexp(unnormalised, dim=-1)  # (B,)
    normalised = unnormalised - increment[:, None]
    dead = ~torch.isfinite(increment)
    if dead.any():
        normalised[dead] = -math.log(log_weights.shape[-1])
    return normalised, increment


def resample_below(
    states: Tensor, log_weights: Tensor, ess_threshold: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Systematically resample the clouds whose ESS is below ``ess_threshold * N``.

    Args:
        states: ``(B, N, D)``.
        log_weights: ``(B, N)``, normalised.
        ess_threshold: the fraction of N below which a cloud is resampled.

    Returns:
        ``(states, log_weights, ess)``: resampled rows get uniform weights; ``ess`` ``(B,)`` is the
        effective sample size before resampling.
    """
    N = log_weights.shape[-1]
    ess = effective_sample_size(log_weights)
    low = ess < ess_threshold * N
    if low.any():
        rows = low.nonzero().squeeze(-1)
        index = systematic_resample(log_weights[rows])  # (b, N)
        states = states.clone()
        states[rows] = torch.gather(states[rows], 1, index[..., None].expand(-1, -1, states.shape[-1]))
        log_weights = log_weights.clone()
        log_weights[rows] = -math.log(N)
    return states, log_weights, ess


@torch.no_grad()
def filter_prefixes(
    model: StateSpaceModel,
    ids: Tensor,
    mask: Tensor,
    *,
    num_particles: int,
    ess_threshold: float = 0.5,
    proposal: Proposal | None = None,
) -> tuple[Particles, Tensor]:
    """Run the particle filter over a padded batch of prefixes.

    Args:
        model: a state-space model.
        ids: ``(B, T)`` long symbol ids.
        mask: ``(B, T)`` bool, True on real steps; a stream's particles and ``Z`` stay put at padded steps.
        num_particles: N per stream.
        ess_threshold: resample when the ESS falls below this fraction of N (0: never, 1: every step).
        proposal: optional ``r(h_t | h_{t-1}, w_t)``; default the model's transition.

    Returns:
        The particles after each stream's last symbol (``log_evidence`` = ``log Z``, the estimate of
        ``log q(prefix)``), and the ESS ``(B, T)`` after each step's reweighting, before resampling
        (NaN at padded steps).
    """
    check_ess_threshold(ess_threshold)
    B, T = ids.shape
    particles = initial_particles(model, B, num_particles)
    states, log_w, log_z = particles.states, particles.log_weights, particles.log_evidence
    ess_history = torch.full((B, T), math.nan, dtype=torch.float64, device=states.device)
    for t in range(T):
        live = mask[:, t]  # (B,)
        symbols = ids[:, t]
        new, correction = propagate(model, states, proposal=proposal, symbols=symbols, t=t + 1)
        log_p = torch.log_softmax(model.emission_logits(new).double(), dim=-1)  # (B, N, V)
        log_g = log_p.gather(-1, symbols[:, None, None].expand(-1, num_particles, 1)).squeeze(-1)
        if correction is not None:
            log_g = log_g + correction
        new_log_w, increment = reweight(log_w, log_g)
        new, new_log_w, ess = resample_below(new, new_log_w, ess_threshold)
        states = torch.where(live[:, None, None], new, states)
        log_w = torch.where(live[:, None], new_log_w, log_w)
        log_z = torch.where(live, log_z + increment, log_z)
        ess_history[:, t] = torch.where(live, ess, math.nan)
    return Particles(states, log_w, log_z), ess_history
