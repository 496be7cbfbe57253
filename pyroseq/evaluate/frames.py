"""Sequences of frames (polyphonic music): the negative log-likelihood per time step, as Pyro's Deep Markov
Model example reports it.

For a split of N sequences with F real frames in all, the figure is the total of a bound's negative over the
sequences divided by F (nats per frame):

    NLL_ELBO   = -(1/F) sum_n ELBO(x_n)
    NLL_IWAE_K = -(1/F) sum_n IWAE_K(x_n)       (tighter; K = 1 gives the ELBO)

Both are upper bounds on the true NLL per frame (in expectation). The standard error is that of the total
over a random sample of sequences, ``sqrt(N) std_n / F``, Monte Carlo noise included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from pyroseq.data.polyphonic import FrameBatch
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate.bounds import log_weights

__all__ = ["frame_nll"]


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
