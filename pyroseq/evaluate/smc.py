"""The prefix-tree particle filter: ``log q(w)`` of every word of a state-space model in one filter run.

A particle filter (:mod:`pyroseq.infer.smc`) run along a word gives ``Z(w)``, an unbiased estimate of
``q(w)``: the product over the word's steps of the mean incremental weight. Words that share a prefix share
the filter up to its end, so the filter runs down the words' :class:`~pyroseq.evaluate.trie.PrefixTree`:

* the root holds N copies of ``h_0`` with ``Z = 1``;
* a node's (resampled) particles are moved once by the transition, ``h^i ~ p(h | h_parent^i)``, and the
  moved cloud is shared by all its children: child ``c`` with symbol ``s`` gets the weights
  ``wbar^i p(s | h^i)`` (normalised) and ``Z(c) = Z(node) sum_i wbar^i p(s | h^i)``;
* a child is resampled (systematically) when its ESS is below ``ess_threshold * N``, then expanded in turn.

Along any one word this is exactly the filter of :func:`~pyroseq.infer.smc.filter_prefixes`, so each
``Z(w)`` is unbiased; siblings share their parent's moves, so words are correlated. The cost is one
transition and one emission per particle per internal node (``O(nodes x N)``), against one per step per
particle per word for the IWAE estimator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyroseq.checks import check_positive_sizes
from pyroseq.errors import ConfigError
from pyroseq.evaluate.trie import PrefixTree
from pyroseq.evaluate.words import WordLogProbs, check_words
from pyroseq.infer.smc import check_ess_threshold, initial_particles, resample_below, reweight
from pyroseq.models.base import StateSpaceModel

__all__ = ["prefix_tree_log_evidence", "smc_word_log_probs", "jackknife_log_mean", "MAX_PARTICLE_ROWS"]

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


@torch.no_grad()
def smc_word_log_probs(
    model: StateSpaceModel,
    words: Sequence[Sequence[int]],
    *,
    num_particles: int,
    num_repeats: int = 4,
    jackknife: bool = False,
    ess_threshold: float = 0.5,
    max_particle_rows: int = MAX_PARTICLE_ROWS,
    progress: bool = True,
) -> WordLogProbs:
    """The prefix-tree particle-filter estimate of ``log q(w)`` for every word of a state-space model.

    R independent filter runs down the words' prefix tree (:func:`prefix_tree_log_evidence`) give
    unbiased ``Z_r(w)``; the estimate is their mean, ``log q(w) ~ logsumexp_r log Z_r(w) - log R``, and the
    R runs are the draws behind the standard errors of :func:`~pyroseq.evaluate.words.word_metrics`
    (``shared``: every word of a run comes from the same filter).

    Args:
        model: a state-space model.
        words: W id lists, each ending in EOS.
        num_particles: N, particles per tree node and run.
        num_repeats: R independent runs (at least 2 for a standard error).
        jackknife: correct the log-mean's bias with the jackknife over the R runs
            (:func:`jackknife_log_mean`; needs R >= 2).
        ess_threshold: see :func:`prefix_tree_log_evidence`.
        max_particle_rows: see :func:`prefix_tree_log_evidence`.
        progress: show a tqdm progress bar over the nodes of all runs.

    Returns:
        ``WordLogProbs`` with ``estimator="smc"``, ``num_samples=N`` and ``log_weights`` the ``(R, W)``
        per-run ``log Z_r(w)``.
    """
    check_words(words)
    check_positive_sizes(num_particles=num_particles, num_repeats=num_repeats)
    if jackknife and num_repeats < 2:
        raise ConfigError(f"the jackknife needs at least 2 filter runs (--repeats), got {num_repeats}")
    tree = PrefixTree.from_sequences(words).to(model.initial_state(()).device)
    runs = [
        prefix_tree_log_evidence(
            model,
            tree,
            num_particles=num_particles,
            ess_threshold=ess_threshold,
            max_particle_rows=max_particle_rows,
            progress=progress,
        )[tree.word_end].cpu()
        for _ in range(num_repeats)
    ]
    lw = torch.stack(runs)  # (R, W)
    log_q = jackknife_log_mean(lw) if jackknife else torch.logsumexp(lw, dim=0) - math.log(num_repeats)
    return WordLogProbs(
        log_q, "smc", num_particles, lw, shared=True, repeats=num_repeats, jackknife=jackknife
    )


def jackknife_log_mean(log_z: Tensor) -> Tensor:
    """The jackknife's bias-corrected ``log mean_r Z_r`` over the R >= 2 runs of dim 0, ``(...)``.

    ``log mean_r Z_r`` of unbiased ``Z_r`` is biased down by about ``c / R`` (``c = var(Z / q) / 2``; for the
    filter ``c`` falls as 1/N). With ``L_R`` the log-mean of all R runs and ``L_{-i}`` that of the R - 1
    runs without run i, the jackknife ``R L_R - (R - 1) mean_i L_{-i}`` cancels the ``1/R`` term
    (Quenouille's jackknife, used on importance-weighted bounds by Nowozin, ICLR 2018), leaving
    ``O(1/R^2)``. Where a run gave ``Z_r = 0`` the leave-one-out terms are not all finite, and the plain
    log-mean is kept.

    Examples:
        >>> import math, torch
        >>> z = torch.tensor([[1.0], [3.0]]).log()  # R = 2 runs of one word
        >>> round(float(jackknife_log_mean(z)), 6) == round(2 * math.log(2.0) - 0.5 * math.log(3.0), 6)
        True
    """
    R = log_z.shape[0]
    if R < 2:
        raise ConfigError(f"the jackknife needs at least 2 runs, got {R}")
    full = torch.logsumexp(log_z, dim=0) - math.log(R)
    without = torch.stack([torch.logsumexp(torch.cat([log_z[:i], log_z[i + 1 :]]), dim=0) for i in range(R)])
    jackknifed = R * full - (R - 1) * (without - math.log(R - 1)).mean(0)
    return torch.where(torch.isfinite(log_z).all(0), jackknifed, full)
