"""Sequences of frames (polyphonic music): the negative log-likelihood per time step, as Pyro's Deep Markov
Model example reports it.

For a split of N sequences with F real frames in all, the figure is the total of a bound's negative over the
sequences divided by F (nats per frame):

    NLL_ELBO   = -(1/F) sum_n ELBO(x_n)
    NLL_IWAE_K = -(1/F) sum_n IWAE_K(x_n)       (tighter; K = 1 gives the ELBO)

Both are upper bounds on the true NLL per frame (in expectation). The standard error is that of the total
over a random sample of sequences, ``sqrt(N) std_n / F``, Monte Carlo noise included.

A secondary figure, :func:`frame_prediction`: how well the most likely next frame, ``x_t`` given
``x_{<t}`` with each key on where its predictive probability exceeds 0.5, matches the data: the frame-level
accuracy of Bay et al. (2009), ``TP / (TP + FP + FN)`` over all keys of all real frames (the figure
Boulanger-Lewandowski et al. 2012 report), precision, recall and F1. An autoregressive model gives
``p(x_t | x_{<t})`` exactly; a state-space model's is estimated by a bootstrap particle filter (the
transition proposes, the emission weighs), ``sum_n wbar_n p(x_t | h_t^n)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from pyroseq.data.polyphonic import FrameBatch
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate.bounds import log_weights
from pyroseq.infer.smc import initial_particles, resample_below, reweight
from pyroseq.models.base import AutoregressiveModel, SequenceModel, StateSpaceModel

__all__ = ["frame_nll", "frame_prediction", "predictive_key_probs"]


@torch.no_grad()
def frame_nll(
    model: Callable[..., None],
    guide: Callable[..., None],
    batches: Iterable[FrameBatch],
    *,
    num_particles: int = 1,
) -> dict[str, float | int]:
    """Negative ELBO (and, for K > 1, negative IWAE_K) per frame over every sequence of ``batches``.

    Args:
        model: a Pyro model of frames, e.g. ``DSSM(emission="bernoulli", obs_dim=88)``.
        guide: its guide, e.g. ``FutureGuide(obs_dim=88)``.
        batches: the split, e.g. ``corpus.test.batches(20)`` (each sequence once).
        num_particles: K guide draws per sequence; the ELBO is their mean, IWAE_K their log-mean-exp.

    Returns:
        ``{"nll_elbo", "nll_elbo_stderr", "nll_iwae_{K}", "nll_iwae_{K}_stderr" (K > 1), "num_sequences",
        "num_frames", "num_particles"}``, NLLs in nats per frame.

    Example:
        >>> from pyroseq.data.polyphonic import pad_frames
        >>> from pyroseq.guides import FutureGuide
        >>> from pyroseq.models import DSSM
        >>> model = DSSM(emission="bernoulli", obs_dim=88, state_dim=4, flow="diagonal")
        >>> guide = FutureGuide(obs_dim=88, state_dim=4)
        >>> batch = pad_frames([torch.zeros(3, 88), torch.ones(5, 88)])
        >>> result = frame_nll(model, guide, [batch], num_particles=4)
        >>> result["num_frames"], result["nll_iwae_4"] <= result["nll_elbo"]
        (8, True)
    """
    if num_particles < 1:
        raise ConfigError(f"the number of particles must be at least 1, got {num_particles}")
    elbos, iwaes, frames = [], [], 0
    for batch in batches:
        lw = log_weights(model, guide, batch.frames, batch.mask, num_particles=num_particles)  # (K, B)
        elbos.append(lw.mean(0))
        iwaes.append(torch.logsumexp(lw, dim=0) - math.log(num_particles))
        frames += batch.num_frames
    if not elbos:
        raise DataError("no sequences to score: the batches are empty")
    out: dict[str, float | int] = {
        "num_sequences": sum(len(e) for e in elbos),
        "num_frames": frames,
        "num_particles": num_particles,
    }
    bounds = {"elbo": torch.cat(elbos)}
    if num_particles > 1:
        bounds[f"iwae_{num_particles}"] = torch.cat(iwaes)
    for name, per_sequence in bounds.items():
        N = len(per_sequence)
        out[f"nll_{name}"] = float(-per_sequence.sum() / frames)
        spread = float(per_sequence.std()) if N > 1 else float("nan")
        out[f"nll_{name}_stderr"] = math.sqrt(N) * spread / frames
    return out


@torch.no_grad()
def predictive_key_probs(
    model: SequenceModel, batch: FrameBatch, *, num_particles: int = 100
) -> torch.Tensor:
    """``p(x_{t,k} = 1 | x_{<t})`` of every key of every step, ``(B, T, F)``: the mean of the next frame's
    law given the frames before it.

    Args:
        model: a model of frames (``emission="bernoulli"``): autoregressive (exact) or state-space (a
            bootstrap particle filter of ``num_particles`` particles, resampled when the ESS falls below
            half of them).
        batch: the frames.
        num_particles: N, the state-space model's particles per sequence.
    """
    if model.emits_symbols:
        raise ConfigError(
            f"predictive_key_probs reads frames, but this {type(model).__name__} emits symbols",
            params=("model",),
        )
    frames, mask = model.checked_inputs(batch.frames, batch.mask)
    emitter = model.emitter
    if isinstance(model, AutoregressiveModel):
        return emitter.law(model.teacher_forced_logits(frames)).mean  # (B, T, F)
    if not isinstance(model, StateSpaceModel):
        raise ConfigError(
            f"cannot predict with a {type(model).__name__}: neither autoregressive nor a state space"
        )
    B, T = mask.shape
    particles = initial_particles(model, B, num_particles)
    states, log_w = particles.states, particles.log_weights  # (B, N, D), (B, N)
    probs = []
    for t in range(T):
        moved = model.transition(states).sample()  # (B, N, D)
        law = emitter.distribution(moved)  # batch (B, N)
        weights = torch.softmax(log_w, dim=-1).to(moved.dtype)  # (B, N)
        probs.append((weights[..., None] * law.mean).sum(1))  # (B, F)
        new_log_w, _ = reweight(log_w, law.log_prob(frames[:, t, None]))
        new, new_log_w, _ = resample_below(moved, new_log_w, 0.5)
        live = mask[:, t]  # (B,): a finished sequence's particles stay put
        states = torch.where(live[:, None, None], new, states)
        log_w = torch.where(live[:, None], new_log_w, log_w)
    return torch.stack(probs, dim=1)  # (B, T, F)


@torch.no_grad()
def frame_prediction(
    model: SequenceModel, batches: Iterable[FrameBatch], *, num_particles: int = 100, threshold: float = 0.5
) -> dict[str, float | int]:
    """Frame-level accuracy, precision, recall and F1 of the most likely next frame (each key on where
    :func:`predictive_key_probs` exceeds ``threshold``), over every real frame of ``batches``.

    Returns:
        ``{"accuracy", "precision", "recall", "f1", "num_frames", "threshold"}``; accuracy is Bay et al.'s
        ``TP / (TP + FP + FN)``.

    Example:
        >>> from pyroseq.data.polyphonic import pad_frames
        >>> from pyroseq.models import RNNLM
        >>> model = RNNLM(emission="bernoulli", obs_dim=88, state_dim=4)
        >>> scores = frame_prediction(model, [pad_frames([torch.zeros(3, 88), torch.ones(2, 88)])])
        >>> scores["num_frames"], 0 <= scores["f1"] <= 1
        (5, True)
    """
    tp = fp = fn = 0
    frames = 0
    for batch in batches:
        predicted = predictive_key_probs(model, batch, num_particles=num_particles) > threshold  # (B, T, F)
        real = batch.mask[..., None]  # (B, T, 1)
        truth = batch.frames > 0.5
        tp += int((predicted & truth & real).sum())
        fp += int((predicted & ~truth & real).sum())
        fn += int((~predicted & truth & real).sum())
        frames += batch.num_frames
    if frames == 0:
        raise DataError("no frames to predict: the batches are empty")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "num_frames": frames,
        "threshold": threshold,
    }
