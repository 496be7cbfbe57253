"""Prefix completion: continue a given prefix by the model's conditional law ``q(w_{t+1:} | w_{1:t})``.

* An autoregressive model is fed the prefix (``step`` on BOS and its symbols) and decoded from there.
* A state-space model's state never sees the symbols, so conditioning on a prefix is posterior inference:
  a particle filter (:func:`~pyroseq.infer.smc.filter_prefixes`) over the prefix gives weighted states
  ``h_t^i ~ p(h_t | w_{1:t})``; each completion starts from one of them, drawn by its weight, and runs on
  by the model's transition, its symbols chosen by the decoder from each step's emission.

With the ancestral decoder at temperature 1 the completions are draws from ``q(. | prefix)`` (for a
state-space model up to the filter's Monte Carlo error, which vanishes as the particles grow).

Each completion comes with its weight ``q(continuation | prefix)``: exact for an autoregressive model; for a
state-space model the ratio ``Z(prefix + continuation) / Z(prefix)`` of one prefix-tree filter run
(:func:`~pyroseq.infer.smc.prefix_tree_log_evidence`) over the distinct completions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pyroseq.checks import check_positive_sizes
from pyroseq.data.trie import PrefixTree
from pyroseq.data.vocab import Vocabulary
from pyroseq.decode import Chooser, check_decoder_arguments, roll_out, seeded, symbol_chooser
from pyroseq.errors import ConfigError, DataError
from pyroseq.infer.smc import filter_prefixes, prefix_tree_log_evidence
from pyroseq.models.base import AutoregressiveModel, SequenceModel, StateSpaceModel
from pyroseq.module import module_device

__all__ = ["complete", "Completions", "COMPLETION_DECODERS", "DEFAULT_PARTICLES"]

COMPLETION_DECODERS = ("ancestral", "greedy", "topk", "nucleus")
DEFAULT_PARTICLES = 1000


@dataclass(frozen=True)
class Completions:
    """Completions of one prefix.

    Attributes:
        prefix: the prefix's ids.
        sequences: each completion as ids, the prefix first, ending in EOS or cut at ``max_length``.
        log_probs: ``log q(continuation | prefix)`` of each, exact (autoregressive) or estimated.
        log_evidence: ``log q(prefix)``, the probability that a sequence starts with the prefix: exact, or
            the filter's estimate ``log Z``.
        ess: the filter's effective sample size after each prefix symbol, before resampling (empty for
            an autoregressive model).
        num_particles: N of the filter (0 for an autoregressive model).
    """

    prefix: list[int]
    sequences: list[list[int]]
    log_probs: list[float]
    log_evidence: float
    ess: list[float]
    num_particles: int


def complete(
    model: SequenceModel,
    prefix: Sequence[int],
    *,
    num_samples: int,
    max_length: int,
    num_particles: int | None = None,
    decoder: str = "ancestral",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    ess_threshold: float = 0.5,
    seed: int | None = None,
) -> Completions:
    """Complete ``prefix`` ``num_samples`` times.

    Args:
        model: an :class:`AutoregressiveModel` or a :class:`StateSpaceModel`.
        prefix: symbol ids without BOS or EOS; empty for unconditional sampling.
        num_samples: how many completions.
        max_length: the most symbols per completion, prefix and EOS included; longer ones are cut there.
        num_particles: state-space models: N, the filter's particles (default :data:`DEFAULT_PARTICLES`);
            refused for autoregressive models, which are fed the prefix.
        decoder: one of :data:`COMPLETION_DECODERS`.
        temperature: divides the logits before sampling, as in :func:`pyroseq.decode.decode`.
        top_k: for ``"topk"``, how many symbols to keep.
        top_p: for ``"nucleus"``, the mass to reach, in (0, 1].
        ess_threshold: the filter resamples when the ESS falls below this fraction of N.
        seed: run on a forked, seeded global generator (reproducible; the caller's state is untouched).

    Returns:
        :class:`Completions`.
    """
    check_positive_sizes(num_samples=num_samples)
    check_decoder_arguments(
        decoder=decoder, num=num_samples, max_length=max_length, temperature=temperature, top_k=top_k,
        top_p=top_p, beam_size=None, beam_sampled=False, length_normalise=False, generator=None, seed=None,
    )  # fmt: skip
    if decoder not in COMPLETION_DECODERS:
        raise ConfigError(f"complete() decodes with one of {', '.join(COMPLETION_DECODERS)}, not {decoder!r}")
    model.require_symbols("prefix completion")
    prefix = [int(s) for s in prefix]
    first = len(Vocabulary.specials)
    for s in prefix:
        if not first <= s < model.vocab_size:
            raise DataError(
                f"prefix symbol id {s} is not a symbol of the vocabulary (ids {first}.."
                f"{model.vocab_size - 1}; PAD, BOS and EOS cannot be in a prefix)"
            )
    if len(prefix) >= max_length:
        raise DataError(
            f"the prefix has {len(prefix)} symbols but completions have at most max_length={max_length}, "
            "EOS included: use a shorter prefix or a larger max_length"
        )
    choose = symbol_chooser(decoder, temperature=temperature, top_k=top_k, top_p=top_p)

    def run() -> Completions:
        if isinstance(model, AutoregressiveModel):
            if num_particles is not None:
                raise ConfigError(
                    "num_particles applies to state-space models only: an autoregressive model is fed "
                    "the prefix"
                )
            return _complete_autoregressive(model, prefix, num_samples, max_length, choose)
        if isinstance(model, StateSpaceModel):
            particles = DEFAULT_PARTICLES if num_particles is None else num_particles
            check_positive_sizes(num_particles=particles)
            return _complete_state_space(
                model, prefix, num_samples, max_length, choose, particles, ess_threshold
            )
        raise ConfigError(
            f"cannot complete with a {type(model).__name__}: it is neither an AutoregressiveModel nor a "
            "StateSpaceModel"
        )

    if seed is None:
        return run()
    with seeded(seed):
        return run()


@torch.no_grad()
def _complete_autoregressive(
    model: AutoregressiveModel, prefix: list[int], num: int, max_length: int, choose: Chooser
) -> Completions:
    state = model.initial_state(1)  # (1, S)
    device = state.device
    prev = torch.full((1,), Vocabulary.bos_id, dtype=torch.long, device=device)
    log_evidence = 0.0
    for s in prefix:
        logits, state = model.step(state, prev)
        log_evidence += float(torch.log_softmax(logits.double(), dim=-1)[0, s])
        prev = torch.full((1,), s, dtype=torch.long, device=device)
    state, prev = state.expand(num, -1).contiguous(), prev.expand(num).contiguous()
    continuations = roll_out(model.step, state, prev, steps=max_length - len(prefix), choose=choose)
    return Completions(
        prefix=prefix,
        sequences=[prefix + c for c, _ in continuations],
        log_probs=[lp for _, lp in continuations],
        log_evidence=log_evidence,
        ess=[],
        num_particles=0,
    )


@torch.no_grad()
def _complete_state_space(
    model: StateSpaceModel,
    prefix: list[int],
    num: int,
    max_length: int,
    choose: Chooser,
    num_particles: int,
    ess_threshold: float,
) -> Completions:
    device = module_device(model)
    ids = torch.tensor([prefix], dtype=torch.long, device=device).reshape(1, len(prefix))
    mask = torch.ones_like(ids, dtype=torch.bool)
    particles, ess = filter_prefixes(
        model, ids, mask, num_particles=num_particles, ess_threshold=ess_threshold
    )
    log_evidence = float(particles.log_evidence[0])
    if not math.isfinite(log_evidence):
        raise DataError(
            f"none of the {num_particles} particles can emit the prefix {prefix}: its probability under the "
            "model is zero or too small for this many particles; use more particles"
        )
    pick = torch.multinomial(particles.log_weights[0].exp(), num, replacement=True)
    h = particles.states[0, pick]  # (n, D)
    last = torch.full((num,), prefix[-1] if prefix else Vocabulary.bos_id, dtype=torch.long, device=device)
    continuations = roll_out(_state_space_step(model), h, last, steps=max_length - len(prefix), choose=choose)
    sequences = [prefix + c for c, _ in continuations]
    return Completions(
        prefix=prefix,
        sequences=sequences,
        log_probs=_conditional_log_probs(model, prefix, sequences, num_particles, ess_threshold),
        log_evidence=log_evidence,
        ess=ess[0].tolist(),
        num_particles=num_particles,
    )


def _state_space_step(model: StateSpaceModel) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A step of :func:`~pyroseq.decode.roll_out` for a state-space model: the state moves by the
    transition whatever symbol was chosen; the logits are its emission."""

    def step(h: Tensor, prev: Tensor) -> tuple[Tensor, Tensor]:
        h = model.transition(h).sample()  # (n, D)
        return model.emission_logits(h), h  # (n, V), (n, D)

    return step


def _conditional_log_probs(
    model: StateSpaceModel,
    prefix: list[int],
    sequences: list[list[int]],
    num_particles: int,
    ess_threshold: float,
) -> list[float]:
    """``log Z(sequence) - log Z(prefix)`` from one prefix-tree filter run over the distinct sequences."""
    distinct = sorted({tuple(s) for s in sequences})
    tree = PrefixTree.from_sequences(([prefix] if prefix else []) + [list(s) for s in distinct])
    tree = tree.to(module_device(model))
    log_z = prefix_tree_log_evidence(
        model, tree, num_particles=num_particles, ess_threshold=ess_threshold, progress=False
    )
    ends = tree.word_end[1:] if prefix else tree.word_end
    prefix_log_z = float(log_z[tree.word_end[0]]) if prefix else 0.0
    by_sequence = {s: float(log_z[e]) - prefix_log_z for s, e in zip(distinct, ends.tolist(), strict=True)}
    return [by_sequence[tuple(s)] for s in sequences]
