"""Word-level evaluation: ``log q(w)`` for every word of a vocabulary, and metrics against p(w).

Four ways to get ``log q(w)`` (definitions, bias and standard errors in ``docs/evaluation.md``):

* :func:`exact_word_log_probs` -- autoregressive models, exact, one batched model step per trie level;
* :func:`prior_word_log_probs` -- state-space models: K trajectories drawn once from the prior score
  every word, ``log q(w) ~ logsumexp_k sum_t log p(w_t | h_t^k) - log K``;
* :func:`guide_word_log_probs` -- state-space models with a guide: IWAE with K particles per word;
* :func:`smc_word_log_probs` -- state-space models: a particle filter run down the
  words' prefix tree, R independent runs.

:func:`word_log_probs` chooses among them by name (:data:`WORD_ESTIMATORS`) and refuses one that does not
apply to the model; its default is exact for autoregressive models and the guide's IWAE for state-space
models (the shared-prior estimator's log-of-mean bias is much larger at the same K).

:func:`word_metrics` turns any of them into the sequence cross-entropy ``-sum_w p(w) log q(w)``, the
KL to p, and the probability mass ``sum_w q(w)`` the model puts on the vocabulary, with standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyroseq.checks import check_positive_sizes
from pyroseq.data.batch import pad_batch
from pyroseq.data.trie import PrefixTree
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate.bounds import log_weights
from pyroseq.infer.smc import MAX_PARTICLE_ROWS, prefix_tree_log_evidence
from pyroseq.models.base import AutoregressiveModel, SequenceModel, StateSpaceModel
from pyroseq.module import module_device

__all__ = [
    "WordLogProbs",
    "exact_word_log_probs",
    "prior_word_log_probs",
    "guide_word_log_probs",
    "smc_word_log_probs",
    "jackknife_log_mean",
    "word_metrics",
    "WordEstimator",
    "WORD_ESTIMATORS",
    "word_log_probs",
]

# Word-particles per guide call of the IWAE estimator: K = 1000 particles for 256 words at once needed
# over 23 GB (OOM-killed); 256 x 100 ran in about 2.3 GB.
MAX_WORD_PARTICLES = 16_384


@dataclass(frozen=True)
class WordLogProbs:
    """Estimates of ``log q(w)`` for a list of words, with the draws behind them.

    Attributes:
        log_q: ``(W,)`` float64, ``log q(w)`` or its estimate ``log (1/K) sum_k W_kw``.
        estimator: ``"exact"``, ``"prior"`` (shared prior trajectories), ``"iwae"`` (guide, per word) or
            ``"smc"`` (the prefix-tree particle filter).
        num_samples: K (0 for the exact estimator; the particles per node for ``"smc"``).
        log_weights: ``(K, W)`` float64 log-weights ``log W_kw`` (None when exact); for ``"smc"`` the
            ``(R, W)`` estimates ``log Z_r(w)`` of the R filter runs.
        shared: True when draw k is the same for every word (the prior estimator, a filter run), so the
            words' estimates are correlated.
        repeats: R, the independent filter runs behind an ``"smc"`` estimate (1 otherwise).
        jackknife: True when ``log_q`` is the jackknife's bias-corrected log-mean of the R runs.
    """

    log_q: Tensor
    estimator: str
    num_samples: int
    log_weights: Tensor | None = None
    shared: bool = False
    repeats: int = 1
    jackknife: bool = False

    def __post_init__(self) -> None:
        if self.estimator not in WORD_ESTIMATORS:
            known = ", ".join(WORD_ESTIMATORS)
            raise ConfigError(f"unknown estimator {self.estimator!r}: use one of {known}")


def check_words(words: Sequence[Sequence[int]]) -> None:
    """Raise :class:`DataError` unless there are words and each ends in EOS with no special symbol before."""
    if len(words) == 0:
        raise DataError("there are no words to score")
    eos = Vocabulary.eos_id
    for w in words:
        if len(w) == 0 or int(w[-1]) != eos:
            raise DataError(f"word {list(w)} does not end in EOS ({eos}): encode words with add_eos=True")
        if any(int(s) in (Vocabulary.pad_id, Vocabulary.bos_id, eos) for s in w[:-1]):
            raise DataError(f"word {list(w)} contains PAD, BOS or EOS before its end")


@torch.no_grad()
def exact_word_log_probs(
    model: AutoregressiveModel, words: Sequence[Sequence[int]], *, batch_size: int = 4096
) -> WordLogProbs:
    """Exact ``log q(w) = sum_t log q(w_t | w_{<t})`` of every word, EOS term included.

    The words' prefix tree is walked level by level: the model is stepped once per level on the batch
    of that level's non-leaf nodes (``state(node) = step(state(parent), symbol(node))``, in chunks of
    ``batch_size``), and each node adds ``log q(symbol | parent prefix)`` to its parent's sum. Put the
    model in eval mode first if it has dropout.

    Args:
        model: an autoregressive model.
        words: W id lists, each ending in EOS.
        batch_size: nodes per model step.
    """
    check_words(words)
    check_positive_sizes(batch_size=batch_size)
    state = model.initial_state(1)  # (1, S)
    device = state.device
    tree = PrefixTree.from_sequences(words).to(device)
    cum = torch.zeros(tree.num_nodes, dtype=torch.float64, device=device)
    row = torch.full((tree.num_nodes,), -1, dtype=torch.long, device=device)  # node -> row in its level
    bos = torch.full((1,), Vocabulary.bos_id, dtype=torch.long, device=device)
    logits, states = model.step(state, bos)
    next_log_probs = torch.log_softmax(logits.double(), dim=-1)  # (N_{d-1} internal, V)
    row[0] = 0
    for nodes in tree.levels[1:]:
        parents = tree.parent[nodes]
        cum[nodes] = cum[parents] + next_log_probs[row[parents], tree.symbol[nodes]]
        internal = nodes[~tree.is_leaf[nodes]]
        if internal.numel() == 0:
            break
        parent_states = states[row[tree.parent[internal]]]  # (N_d internal, S)
        symbols = tree.symbol[internal]
        outputs = [
            model.step(parent_states[i : i + batch_size], symbols[i : i + batch_size])
            for i in range(0, internal.numel(), batch_size)
        ]
        next_log_probs = torch.log_softmax(torch.cat([o[0] for o in outputs]).double(), dim=-1)
        states = torch.cat([o[1] for o in outputs])
        row[internal] = torch.arange(internal.numel(), device=device)
    return WordLogProbs(cum[tree.word_end].cpu(), "exact", 0)


@torch.no_grad()
def prior_word_log_probs(
    model: StateSpaceModel,
    words: Sequence[Sequence[int]],
    *,
    num_samples: int,
    chunk_size: int = 100,
    progress: bool = True,
) -> WordLogProbs:
    """The shared-trajectory estimate of ``log q(w)`` for every word of a state-space model.

    Because the state never sees the symbols, one prior trajectory ``h^k_{1:T} ~ p(h)`` scores every
    word at once: ``W_kw = prod_t p(w_t | h_t^k)``, an unbiased estimate of ``q(w)``, and

        log q(w) ~ logsumexp_k log W_kw - log K.

    ``log W_kw`` is accumulated over the words' prefix tree (one cumulative sum per node), so each
    trajectory costs one emission per step plus one gather per tree level. Trajectories are drawn in
    chunks of ``chunk_size``; memory is about ``chunk_size x (T x V + nodes)`` floats plus the
    ``(K, W)`` float64 log-weights kept for the standard errors (80 MB for K = 1000, W = 10,000).

    Args:
        model: a state-space model.
        words: W id lists, each ending in EOS.
        num_samples: K, the number of prior trajectories.
        chunk_size: trajectories per chunk.
        progress: show a tqdm progress bar over chunks.
    """
    check_words(words)
    check_positive_sizes(num_samples=num_samples, chunk_size=chunk_size)
    tree = PrefixTree.from_sequences(words).to(module_device(model))
    T = tree.max_depth
    lw = torch.empty(num_samples, len(words), dtype=torch.float64)  # (K, W)
    starts = range(0, num_samples, chunk_size)
    for start in tqdm(starts, desc="prior trajectories", unit="chunk", disable=not progress):
        k = min(chunk_size, num_samples - start)
        h = model.sample_states(k, T)  # (k, T, D)
        log_p = torch.log_softmax(model.emission_logits(h), dim=-1)  # (k, T, V)
        cum = log_p.new_zeros(k, tree.num_nodes)  # (k, N)
        for d, nodes in enumerate(tree.levels[1:]):
            cum[:, nodes] = cum[:, tree.parent[nodes]] + log_p[:, d, tree.symbol[nodes]]
        lw[start : start + k] = cum[:, tree.word_end].double().cpu()
    log_q = torch.logsumexp(lw, dim=0) - math.log(num_samples)
    return WordLogProbs(log_q, "prior", num_samples, lw, shared=True)


@torch.no_grad()
def guide_word_log_probs(
    model: StateSpaceModel,
    guide: Callable[..., None],
    words: Sequence[Sequence[int]],
    *,
    num_samples: int,
    batch_size: int = 256,
    particle_chunk: int | None = None,
    progress: bool = True,
) -> WordLogProbs:
    """The importance-weighted (IWAE) estimate of ``log q(w)`` per word, with K guide particles each.

    ``log q(w) ~ logsumexp_k log W_kw - log K`` with ``W_kw = p(w, h^k) / q(h^k | w)``, ``h^k ~ q(h | w)``
    drawn independently for every word (see :func:`~pyroseq.evaluate.bounds.log_weights`).

    Args:
        model: the Pyro model, called as ``model(ids, mask)``.
        guide: the Pyro guide, called as ``guide(ids, mask)``.
        words: W id lists, each ending in EOS.
        num_samples: K particles per word.
        batch_size: words per guide call; the words are sorted by length, so each call pads them to
            the longest of similar lengths rather than to the longest word of all.
        particle_chunk: particles per guide call; default: as many as keep ``batch_size * particle_chunk``
            within :data:`MAX_WORD_PARTICLES` (about 1.5 GB for a D = 16 DSSM), which bounds memory.
        progress: show a tqdm progress bar over word batches.
    """
    check_words(words)
    check_positive_sizes(num_samples=num_samples, batch_size=batch_size, particle_chunk=particle_chunk)
    if particle_chunk is None:
        particle_chunk = min(num_samples, max(1, MAX_WORD_PARTICLES // batch_size))
    chunk = particle_chunk
    device = module_device(model)
    order = sorted(range(len(words)), key=lambda i: len(words[i]))  # words by length: little padding
    lw = torch.empty(num_samples, len(words), dtype=torch.float64)  # (K, W), in the words' order
    starts = range(0, len(words), batch_size)
    for start in tqdm(starts, desc="IWAE word batches", unit="batch", disable=not progress):
        columns = order[start : start + batch_size]
        batch = pad_batch([words[i] for i in columns], device=device)  # padded to its own longest word
        for k0 in range(0, num_samples, chunk):
            k = min(chunk, num_samples - k0)
            block = log_weights(model, guide, batch.ids, batch.mask, num_particles=k)  # (k, B)
            lw[k0 : k0 + k, columns] = block.double().cpu()
    log_q = torch.logsumexp(lw, dim=0) - math.log(num_samples)
    return WordLogProbs(log_q, "iwae", num_samples, lw, shared=False)


@torch.no_grad()
def word_metrics(log_q_estimate: WordLogProbs, p: Tensor | np.ndarray | Sequence[float]) -> dict:
    """Sequence cross-entropy, entropy, KL and vocabulary mass of ``q`` against the word distribution p.

    * ``ce_nats = -sum_w p(w) log q(w)`` (nats per word), ``entropy_nats = H(p)``,
      ``kl_nats = ce_nats - entropy_nats = KL(p || q)`` (its standard error is ``ce_stderr``);
    * ``vocab_mass = sum_w q(w)``: the probability the model puts on these words.

    Standard errors (delta method; zero for the exact estimator, NaN for K = 1), with ``r_kw = W_kw / q(w)``
    the weights relative to their mean:

    * shared draws (prior estimator; for ``"smc"`` each draw is one filter run): the words share draws,
      so their errors are correlated; trajectory (or run) k's influence on the CE is
      ``psi_k = -sum_w p(w) (r_kw - 1)`` and ``ce_stderr = std_k(psi) / sqrt(K)``; ``vocab_mass`` is the
      mean over k of ``M_k = sum_w W_kw``, so ``vocab_mass_stderr = std_k(M) / sqrt(K)``.
    * independent draws per word (IWAE): ``ce_stderr^2 = sum_w p(w)^2 var_k(r_kw) / K`` and
      ``vocab_mass_stderr^2 = sum_w q(w)^2 var_k(r_kw) / K``.

    Log-mean estimators are biased downwards (``E log q_hat <= log q``, by about ``var_k(r) / 2K``),
    so the estimated CE is biased upwards; the bias shrinks as 1/K.

    Args:
        log_q_estimate: from one of the estimators, for W words.
        p: ``(W,)`` word probabilities (normalised here, so counts also work).

    Returns:
        ``{"ce_nats", "ce_stderr", "entropy_nats", "kl_nats", "vocab_mass", "vocab_mass_stderr",
        "estimator", "samples", "repeats", "jackknife"}``.
    """
    log_q = log_q_estimate.log_q.double().cpu()  # (W,)
    p = torch.as_tensor(np.asarray(p, dtype=np.float64))
    if p.shape != log_q.shape:
        raise DataError(f"p has shape {tuple(p.shape)} but there are {log_q.numel()} words")
    if (p < 0).any() or not p.sum() > 0:
        raise DataError("p must be non-negative and not all zero")
    p = p / p.sum()
    on_support = p > 0
    ce = -(p[on_support] * log_q[on_support]).sum()
    entropy = -torch.special.xlogy(p, p).sum()
    q = log_q.exp()
    lw = log_q_estimate.log_weights
    if lw is None:
        ce_stderr = mass_stderr = 0.0
    elif lw.shape[0] < 2:
        ce_stderr = mass_stderr = float("nan")
    else:
        K = lw.shape[0]
        finite = torch.isfinite(log_q)
        r = torch.where(finite, (lw.double() - log_q).exp(), 0.0)  # (K, W), each <= K
        if log_q_estimate.shared:
            psi = -(r - 1.0) @ p  # (K,)
            ce_stderr = float(psi.std() / math.sqrt(K))
            mass_per_draw = torch.logsumexp(lw.double(), dim=1).exp()  # (K,)
            mass_stderr = float(mass_per_draw.std() / math.sqrt(K))
        else:
            var_r = r.var(dim=0)  # (W,)
            ce_stderr = float(((p**2 * var_r).sum() / K).sqrt())
            mass_stderr = float(((q**2 * var_r).sum() / K).sqrt())
    return {
        "ce_nats": float(ce),
        "ce_stderr": ce_stderr,
        "entropy_nats": float(entropy),
        "kl_nats": float(ce - entropy),
        "vocab_mass": float(q.sum()),
        "vocab_mass_stderr": mass_stderr,
        "estimator": log_q_estimate.estimator,
        "samples": log_q_estimate.num_samples,
        "repeats": log_q_estimate.repeats,
        "jackknife": log_q_estimate.jackknife,
    }


@dataclass(frozen=True)
class WordEstimator:
    """A named ``log q(w)`` estimator: which models it serves and how :func:`word_log_probs` calls it.

    Attributes:
        score: ``score(model, guide, words, num_samples, progress, **options)`` -> :class:`WordLogProbs`.
        latent: True for state-space models, False for autoregressive ones.
        default: whether it is the default for its kind of model (one per kind).
        options: the keyword options beyond K that it takes (e.g. ``"num_repeats"``).
    """

    score: Callable[..., WordLogProbs]
    latent: bool
    default: bool = False
    options: tuple[str, ...] = ()


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
        raise ConfigError(
            f"the jackknife needs at least 2 filter runs (num_repeats), got {num_repeats}",
            params=("num_repeats",),
        )
    tree = PrefixTree.from_sequences(words).to(module_device(model))
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


WORD_ESTIMATORS: dict[str, WordEstimator] = {
    "exact": WordEstimator(lambda m, g, w, k, p: exact_word_log_probs(m, w), latent=False, default=True),
    "iwae": WordEstimator(
        lambda m, g, w, k, p: guide_word_log_probs(m, g, w, num_samples=k, progress=p),
        latent=True,
        default=True,
    ),
    "prior": WordEstimator(
        lambda m, g, w, k, p: prior_word_log_probs(m, w, num_samples=k, progress=p), latent=True
    ),
    "smc": WordEstimator(
        lambda m, g, w, k, p, **options: smc_word_log_probs(m, w, num_particles=k, progress=p, **options),
        latent=True,
        options=("num_repeats", "jackknife"),
    ),
}
"""Name -> estimator; register a new one with one entry (its :class:`WordLogProbs` carries the name)."""


def word_log_probs(
    model: SequenceModel,
    guide: Callable[..., None],
    words: Sequence[Sequence[int]],
    *,
    estimator: str | None = None,
    num_samples: int = 100,
    progress: bool = False,
    **options: int | None,
) -> WordLogProbs:
    """``log q(w)`` of every word by the estimator named ``estimator``, or the model's default.

    The default is ``"exact"`` for an autoregressive model and ``"iwae"`` (K guide particles per word) for
    a state-space model. The returned estimate's ``estimator`` says which ran.

    Args:
        model: a pyroseq model.
        guide: its guide (unused by the exact and prior estimators).
        words: W id lists, each ending in EOS.
        estimator: a key of :data:`WORD_ESTIMATORS`, or None for the default.
        num_samples: K, the particles or trajectories of a sampling estimator.
        progress: show a progress bar.
        **options: options that only some estimators take (``num_repeats``: the smc estimator's
            independent runs; ``jackknife``: its bias correction); None means not given.

    Raises:
        ConfigError: an unknown estimator, one that does not apply to this kind of model, or an option
            that it does not take.
    """
    model.require_symbols("a word estimator")
    latent = not model.autoregressive
    fits = [name for name, e in WORD_ESTIMATORS.items() if e.latent == latent]
    if estimator is None:
        estimator = next(name for name in fits if WORD_ESTIMATORS[name].default)
    if estimator not in WORD_ESTIMATORS:
        raise ConfigError(f"unknown estimator {estimator!r}: use one of {', '.join(WORD_ESTIMATORS)}")
    if estimator not in fits:
        why = (
            "a state-space model's log q(w) has no closed form"
            if latent
            else "an autoregressive model's log q(w) is exact"
        )
        raise ConfigError(f"estimator {estimator}: {why}; use {' or '.join(fits)}", params=("estimator",))
    given = {name: value for name, value in options.items() if value is not None}
    for name in given:
        if name not in WORD_ESTIMATORS[estimator].options:
            takes = [e for e, spec in WORD_ESTIMATORS.items() if name in spec.options]
            raise ConfigError(
                f"{name} applies to the {' and '.join(takes) or 'no'} estimator, not {estimator}"
            )
    return WORD_ESTIMATORS[estimator].score(model, guide, words, num_samples, progress, **given)
