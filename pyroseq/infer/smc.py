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

Words that share a prefix share the filter up to its end, so :func:`prefix_tree_log_evidence` runs it
down a :class:`~pyroseq.data.trie.PrefixTree` of many words at once:

* the root holds N copies of ``h_0`` with ``Z = 1``;
* a node's (resampled) particles are moved once by the transition, ``h^i ~ p(h | h_parent^i)``, and the
  moved cloud is shared by all its children: child ``c`` with symbol ``s`` gets the weights
  ``wbar^i p(s | h^i)`` (normalised) and ``Z(c) = Z(node) sum_i wbar^i p(s | h^i)``;
* a child is resampled (systematically) when its ESS is below ``ess_threshold * N``, then expanded in turn.

Along any one word this is exactly the filter of :func:`filter_prefixes`, so each ``Z(w)`` is unbiased;
siblings share their parent's moves, so words are correlated. The cost is one transition and one emission
per particle per internal node (``O(nodes x N)``), against one per step per particle per word for the IWAE
estimator.

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
from tqdm.auto import tqdm

from pyroseq.checks import check_positive_sizes
from pyroseq.data.trie import PrefixTree
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
    "prefix_tree_log_evidence",
    "MAX_PARTICLE_ROWS",
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


# Particles moved per model call: 2^16 rows of a D = 16 DSSM take about 30 MB for the states and the
# emission log-probabilities together; the total live memory is about the tree depth times this.
MAX_PARTICLE_ROWS = 65_536


def _children(tree: PrefixTree) -> tuple[Tensor, Tensor, Tensor]:
    """Children of every node in CSR form: ``(order, start, count)``; node ``n``'s children are
    ``order[start[n] : start[n] + count[n]]``."""
    order = torch.argsort(tree.parent[1:], stable=True) + 1  # non-root nodes grouped by parent
    count = torch.bincount(tree.parent[1:], minlength=tree.num_nodes)
    start = torch.cumsum(count, 0) - count
    return order, start, count


@torch.no_grad()
def prefix_tree_log_evidence(
    model: StateSpaceModel,
    tree: PrefixTree,
    *,
    num_particles: int,
    ess_threshold: float = 0.5,
    max_particle_rows: int = MAX_PARTICLE_ROWS,
    progress: bool = True,
) -> Tensor:
    """``log Z`` at every node of ``tree``: the filter's estimate of ``log q(prefix)`` for each prefix.

    ``q(prefix)`` is the probability that a sequence starts with the prefix; at a node whose last symbol
    is EOS it is the probability of the whole sequence, ``q(w)``. ``exp(log Z)`` is unbiased.

    The tree is walked depth first in blocks of at most ``max(1, max_particle_rows // N)`` nodes, so
    memory stays about ``depth x max_particle_rows x (D + V)`` floats whatever the number of words.

    Args:
        model: a state-space model.
        tree: the prefix tree (on the model's device).
        num_particles: N, particles per node.
        ess_threshold: resample a node's cloud when its ESS is below this fraction of N (0: never, which
            gives the shared-prior-trajectory estimate of each word, with N trajectories per node).
        max_particle_rows: bounds the particles moved per model call.
        progress: show a tqdm progress bar over the tree's nodes.

    Returns:
        ``(num_nodes,)`` float64 (0 at the root).
    """
    check_positive_sizes(num_particles=num_particles, max_particle_rows=max_particle_rows)
    check_ess_threshold(ess_threshold)
    N = num_particles
    block_nodes = max(1, max_particle_rows // N)
    order, start, count = _children(tree)
    root = initial_particles(model, 1, N)
    device = root.states.device
    # A node below one that no particle could emit is never expanded: its estimate stays Z = 0.
    log_z = torch.full((tree.num_nodes,), -math.inf, dtype=torch.float64, device=device)
    log_z[0] = 0.0
    zero = torch.zeros(1, dtype=torch.long, device=device)
    # Pending work: (moved cloud (m, N, D), row of each node's cloud in it (n,), nodes (n,), weights (n, N)).
    stack = [(root.states, zero, zero, root.log_weights)]
    with tqdm(total=tree.num_nodes, desc="SMC prefix tree", unit="node", disable=not progress) as bar:
        bar.update(1)
        while stack:
            cloud, rows, nodes, log_w = stack.pop()
            if nodes.numel() > block_nodes:
                stack.append((cloud, rows[block_nodes:], nodes[block_nodes:], log_w[block_nodes:]))
                rows, nodes, log_w = rows[:block_nodes], nodes[:block_nodes], log_w[:block_nodes]
            states, log_w, _ = resample_below(cloud[rows], log_w, ess_threshold)  # (n, N, D)
            moved = model.transition(states).sample()  # (n, N, D): shared by each node's children
            log_p = torch.log_softmax(model.emission_logits(moved), dim=-1)  # (n, N, V)
            per_node = count[nodes]
            child_rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=device), per_node)
            offset = (
                torch.arange(child_rows.numel(), device=device)
                - (torch.cumsum(per_node, 0) - per_node)[child_rows]
            )
            children = order[start[nodes][child_rows] + offset]  # (c,)
            log_g = log_p[child_rows, :, tree.symbol[children]]  # (c, N)
            child_log_w, increment = reweight(log_w[child_rows], log_g)
            log_z[children] = log_z[nodes][child_rows] + increment
            bar.update(children.numel())
            go_on = ~tree.is_leaf[children] & torch.isfinite(increment)
            if go_on.any():
                stack.append((moved, child_rows[go_on], children[go_on], child_log_w[go_on]))
    return log_z
