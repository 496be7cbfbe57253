"""Decoders: turning a trained model into symbol sequences.

* ``"ancestral"``: sample ``w_t`` from ``softmax(logits / temperature)`` (temperature 1 is the model);
* ``"greedy"``: ``w_t = argmax`` (the limit temperature -> 0);
* ``"topk"``: sample among the ``top_k`` most probable symbols (Fan et al. 2018);
* ``"nucleus"``: sample among the smallest set of most probable symbols whose mass reaches ``top_p``
  (Holtzman et al. 2020);
* ``"beam"``: keep the ``beam_size`` best partial sequences by summed log-probability (autoregressive
  models only).

For an autoregressive model each chosen symbol is fed back into the state. For a state-space model the
state trajectory does not depend on the symbols: a trajectory ``h_{1:T}`` is drawn from the prior and the
decoder acts on each step's emission ``p(w_t | h_t)`` along it. Every sequence stops at its first EOS
(kept as its last id) or at ``max_length``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from pyroseq.checks import check_memory
from pyroseq.data.batch import check_seed, first_eos
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError
from pyroseq.models.base import AutoregressiveModel, SequenceModel, StateSpaceModel
from pyroseq.module import module_device

__all__ = ["decode", "DECODERS", "roll_out", "symbol_chooser", "check_decoder_arguments", "seeded"]

DECODERS = ("ancestral", "greedy", "topk", "nucleus", "beam")

Decoded = list[tuple[list[int], float]]
Chooser = Callable[[Tensor, torch.Generator | None], Tensor]


def decode(
    model: SequenceModel,
    *,
    num: int,
    max_length: int,
    decoder: str = "ancestral",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    beam_size: int | None = None,
    beam_sampled: bool = False,
    length_normalise: bool = False,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> Decoded:
    """Decode ``num`` sequences from ``model``.

    Args:
        model: an :class:`AutoregressiveModel` or a :class:`StateSpaceModel`.
        num: how many sequences to return.
        max_length: the most symbols per sequence, EOS included; longer ones are cut there (no EOS).
        decoder: one of :data:`DECODERS`.
        temperature: divides the logits before sampling (ancestral, topk, nucleus, sampled beam
            expansions); greedy and deterministic beam search ignore it. Any positive float is defined,
            subnormals such as ``1e-320`` included: the logits are shifted so that the largest is 0 and
            divided in float64, so a temperature too small for any other symbol to keep mass picks the
            most probable symbol, the limit ``decoder="greedy"`` (a DSSM's trajectories are still drawn
            from the prior, so its words still vary).
        top_k: for ``"topk"``, how many symbols to keep (>= 1).
        top_p: for ``"nucleus"``, the mass to reach, in (0, 1].
        beam_size: for ``"beam"``, the beam width B (default ``num``; ``num <= B``).
        beam_sampled: for ``"beam"``, expand each beam by B continuations drawn without replacement from
            ``softmax(logits / temperature)`` (Gumbel top-k, per beam) instead of its B most probable ones;
            the B best by true score are kept either way: beam search with sampled expansions.
        length_normalise: for ``"beam"``, rank (and score) by log-probability per symbol.
        generator: the random-number generator for the symbol choices (state-space trajectories use
            torch's global generator).
        seed: alternatively, a seed: decoding then runs on a forked, seeded global generator, so the
            result is reproducible and the caller's random state is left unchanged.

    Returns:
        At most ``num`` pairs ``(ids, score)``: beam search returns fewer when fewer distinct sequences
        exist (e.g. with ``max_length`` 1, one per symbol other than PAD and BOS); the other decoders
        return exactly ``num``. The score is the model's log-probability of the ids (untempered,
        summed): ``log q(w)`` for an autoregressive model, ``sum_t log p(w_t | h_t)`` along the sampled
        trajectory for a state-space model; beam search divides it by the length when
        ``length_normalise`` and returns beams in non-increasing score.
    """
    check_decoder_arguments(
        decoder=decoder,
        num=num,
        max_length=max_length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        beam_size=beam_size,
        beam_sampled=beam_sampled,
        length_normalise=length_normalise,
        generator=generator,
        seed=seed,
    )
    if isinstance(model, SequenceModel):
        model.require_symbols("decoding")
    if isinstance(model, StateSpaceModel) and decoder == "beam":
        raise ConfigError(
            "beam search needs an autoregressive model: the DSSM's state does not depend on the "
            "emitted tokens, so there is nothing to search over; decode a state-space model with "
            "'greedy' (per-step argmax along a sampled trajectory), 'ancestral', 'topk' or 'nucleus'"
        )
    if not isinstance(model, AutoregressiveModel | StateSpaceModel):
        raise ConfigError(
            f"cannot decode a {type(model).__name__}: it is neither an AutoregressiveModel nor a "
            "StateSpaceModel"
        )

    check_memory(
        _memory_estimate(model, num=num, max_length=max_length, width=beam_size or num),
        what=f"decoding {num} sequences of up to {max_length} symbols",
        fix="decode fewer at a time (-n) or shorter ones (--max-length)",
        device=module_device(model),
    )

    def run(gen: torch.Generator | None) -> Decoded:
        if decoder == "beam":
            return _beam_search(
                model,
                num=num,
                max_length=max_length,
                beam_size=num if beam_size is None else beam_size,
                sampled=beam_sampled,
                temperature=temperature,
                length_normalise=length_normalise,
                generator=gen,
            )
        choose = symbol_chooser(decoder, temperature=temperature, top_k=top_k, top_p=top_p)
        by_model = _decode_autoregressive if isinstance(model, AutoregressiveModel) else _decode_state_space
        return by_model(model, num=num, max_length=max_length, choose=choose, generator=gen)

    if seed is None:
        return run(generator)
    with seeded(seed):
        return run(None)


def check_decoder_arguments(
    *,
    decoder: str,
    num: int,
    max_length: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    beam_size: int | None,
    beam_sampled: bool,
    length_normalise: bool,
    generator: torch.Generator | None,
    seed: int | None,
) -> None:
    """Raise :class:`ConfigError` naming the first of :func:`decode`'s arguments that is invalid."""
    if decoder not in DECODERS:
        raise ConfigError(f"unknown decoder {decoder!r}: use one of {', '.join(DECODERS)}")
    if num < 1:
        raise ConfigError(f"num must be at least 1, got {num}")
    if max_length < 1:
        raise ConfigError(f"max_length must be at least 1, got {max_length}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    if (top_k is None) != (decoder != "topk"):
        raise ConfigError("top_k is needed by, and only used by, decoder='topk'")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    if (top_p is None) != (decoder != "nucleus"):
        raise ConfigError("top_p is needed by, and only used by, decoder='nucleus'")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if decoder != "beam" and (beam_size is not None or beam_sampled or length_normalise):
        raise ConfigError("beam_size, beam_sampled and length_normalise are only used by decoder='beam'")
    if beam_size is not None and beam_size < 1:
        raise ConfigError(f"beam_size must be at least 1, got {beam_size}")
    if beam_size is not None and num > beam_size:
        raise ConfigError(f"a beam of width {beam_size} holds at most {beam_size} sequences; num is {num}")
    if generator is not None and seed is not None:
        raise ConfigError("pass a generator or a seed, not both")
    if seed is not None:
        check_seed(seed)


def _memory_estimate(model: SequenceModel, *, num: int, max_length: int, width: int) -> int:
    """Bytes a decode needs, roughly: about 100 per symbol for the returned ids and scores (tensors, then
    Python lists), plus float64 logits, probabilities and log-probabilities over the vocabulary: for a
    state-space model of every step at once ``(n, T, V)``, for an autoregressive one of a step ``(n, V)``."""
    V = model.vocab_size
    per_sequence = max_length * (100 + 28 * V) if isinstance(model, StateSpaceModel) else 100 * max_length
    return num * per_sequence + width * V * 28


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run on torch's global generators seeded with ``seed``, restoring their state afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _tempered(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` in float64, shifted so that the largest is 0.

    The shift leaves the softmax unchanged and keeps every temperature finite: dividing the shifted
    logits (all <= 0) by a tiny temperature gives 0 and large negatives (or -inf), never inf - inf.
    """
    logits = logits.double()
    return (logits - logits.amax(dim=-1, keepdim=True)) / temperature


def symbol_chooser(decoder: str, *, temperature: float, top_k: int | None, top_p: float | None) -> Chooser:
    """The per-step symbol choice ``(logits (n, V), generator) -> ids (n,)`` of a non-beam decoder."""

    def choose(logits: Tensor, generator: torch.Generator | None) -> Tensor:
        if decoder == "greedy":
            return logits.argmax(dim=-1)
        scaled = _tempered(logits, temperature)  # (n, V)
        if decoder == "topk":
            kept = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1)
            scaled = torch.full_like(scaled, -math.inf).scatter(-1, kept.indices, kept.values)
        elif decoder == "nucleus":
            ordered, order = scaled.sort(dim=-1, descending=True)
            probs = torch.softmax(ordered, dim=-1)
            before = probs.cumsum(dim=-1) - probs  # mass of the more probable symbols
            ordered = ordered.masked_fill(before >= top_p, -math.inf)  # the first symbol always stays
            scaled = torch.full_like(scaled, -math.inf).scatter(-1, order, ordered)
        probs = torch.softmax(scaled, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    return choose


def _cut_at_eos(ids: Tensor, log_probs: Tensor) -> Decoded:
    """Rows of ``ids (n, T)`` up to their first EOS (kept), each with the sum of its ``log_probs (n, T)``."""
    ends = (first_eos(ids) + 1).clamp(max=ids.shape[-1]).tolist()
    rows = zip(ids.tolist(), log_probs.tolist(), ends, strict=True)
    return [(row[:end], float(math.fsum(lp[:end]))) for row, lp, end in rows]


@torch.no_grad()
def roll_out(
    step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    state: Tensor,
    prev: Tensor,
    *,
    steps: int,
    choose: Chooser,
    generator: torch.Generator | None = None,
) -> Decoded:
    """Decode step by step from ``state``: ``logits, state = step(state, prev)``, then the next symbol
    ``prev = choose(logits, generator)``, until every sequence has chosen EOS or ``steps`` are taken.

    ``step`` is an autoregressive model's :meth:`~pyroseq.models.base.AutoregressiveModel.step` (fed each
    chosen symbol), or a state-space model's transition and emission (which ignore it). Prefix completion
    (:mod:`pyroseq.complete`) starts it from a state conditioned on the prefix.

    Args:
        step: ``(state, prev (n,)) -> (logits (n, V), state)``.
        state: the state the first step starts from.
        prev: ``(n,)`` the symbols before the first step (BOS, or a prefix's last symbol).
        steps: the most symbols to choose.
        choose: a symbol choice, from :func:`symbol_chooser`.
        generator: the random-number generator of the choices.

    Returns:
        ``n`` pairs ``(ids, score)``: the chosen symbols up to the first EOS (kept), and the sum of their
        untempered log-probabilities.
    """
    alive = torch.ones(prev.shape[0], dtype=torch.bool, device=prev.device)
    ids, log_probs = [], []
    for _ in range(steps):
        logits, state = step(state, prev)  # (n, V)
        choice = choose(logits, generator)  # (n,)
        ids.append(choice)
        log_probs.append(torch.log_softmax(logits.double(), dim=-1).gather(-1, choice[:, None]).squeeze(-1))
        alive = alive & (choice != Vocabulary.eos_id)
        if not alive.any():
            break
        prev = choice
    return _cut_at_eos(torch.stack(ids, dim=1), torch.stack(log_probs, dim=1))


def _decode_autoregressive(
    model: AutoregressiveModel,
    *,
    num: int,
    max_length: int,
    choose: Chooser,
    generator: torch.Generator | None,
) -> Decoded:
    state = model.initial_state(num)  # (n, S)
    bos = torch.full((num,), Vocabulary.bos_id, dtype=torch.long, device=state.device)
    return roll_out(model.step, state, bos, steps=max_length, choose=choose, generator=generator)


@torch.no_grad()
def _decode_state_space(
    model: StateSpaceModel,
    *,
    num: int,
    max_length: int,
    choose: Chooser,
    generator: torch.Generator | None,
) -> Decoded:
    h = model.sample_states(num, max_length)  # (n, T, D)
    logits = model.emission_logits(h)  # (n, T, V)
    n, T, V = logits.shape
    ids = choose(logits.reshape(n * T, V), generator).reshape(n, T)
    log_probs = torch.log_softmax(logits.double(), dim=-1).gather(-1, ids[..., None]).squeeze(-1)
    return _cut_at_eos(ids, log_probs)


@torch.no_grad()
def _beam_search(
    model: AutoregressiveModel,
    *,
    num: int,
    max_length: int,
    beam_size: int,
    sampled: bool,
    temperature: float,
    length_normalise: bool,
    generator: torch.Generator | None,
) -> Decoded:
    """Beam search: the B best hypotheses, finished (ended in EOS) or live, compete for the B slots.

    Each step expands every live hypothesis by B continuations (its B most probable, or B drawn without
    replacement by Gumbel top-k) and keeps the B best of the finished hypotheses and the expansions.
    With B = 1 this is greedy decoding. Hypotheses still live at ``max_length`` are returned cut there.
    Returns the ``num`` best, or all of them when fewer than ``num`` sequences can be formed.
    """
    state = model.initial_state(1)  # (1, S)
    device = state.device
    prev = torch.full((1,), Vocabulary.bos_id, dtype=torch.long, device=device)
    live_ids = torch.zeros(1, 0, dtype=torch.long, device=device)  # (n, t)
    live_scores = torch.zeros(1, dtype=torch.float64, device=device)  # (n,)
    finished: list[tuple[list[int], float]] = []  # (ids, summed log-probability)

    def rank(score: Tensor | float, length: int) -> Tensor | float:
        return score / length if length_normalise else score

    for t in range(max_length):
        logits, state = model.step(state, prev)  # (n, V), (n, S)
        log_p = torch.log_softmax(logits.double(), dim=-1)  # (n, V)
        k = min(beam_size, log_p.shape[-1])
        if sampled:
            u = torch.rand(log_p.shape, dtype=torch.float64, device=device, generator=generator)
            gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
            expand = (torch.log_softmax(_tempered(logits, temperature), dim=-1) + gumbel).topk(k).indices
        else:
            expand = log_p.topk(k).indices  # (n, k)
        scores = (live_scores[:, None] + log_p.gather(-1, expand)).flatten()  # (n * k,)
        parents = torch.arange(log_p.shape[0], device=device).repeat_interleave(k)
        symbols = expand.flatten()
        possible = torch.isfinite(scores)
        scores, parents, symbols = scores[possible], parents[possible], symbols[possible]
        old_keys = torch.tensor([rank(s, len(i)) for i, s in finished], dtype=torch.float64, device=device)
        keys = torch.cat([old_keys, rank(scores, t + 1)])
        best = keys.topk(min(beam_size, keys.numel())).indices
        kept_old = best[best < len(finished)].tolist()
        new = best[best >= len(finished)] - len(finished)
        finished = [finished[i] for i in kept_old]
        ends = symbols[new] == Vocabulary.eos_id
        for i in new[ends].tolist():
            finished.append((live_ids[parents[i]].tolist() + [Vocabulary.eos_id], float(scores[i])))
        go_on = new[~ends]
        if go_on.numel() == 0:
            break
        live_ids = torch.cat([live_ids[parents[go_on]], symbols[go_on, None]], dim=1)
        live_scores = scores[go_on]
        state = state[parents[go_on]]
        prev = symbols[go_on]
    else:
        finished += [(ids, float(s)) for ids, s in zip(live_ids.tolist(), live_scores.tolist(), strict=True)]
    ranked = [(ids, float(rank(s, len(ids)))) for ids, s in finished]
    return sorted(ranked, key=lambda pair: pair[1], reverse=True)[:num]
