"""What a training loop can ask of a model and guide between steps: whether the states carry anything
(posterior collapse), and where a non-finite loss comes from.

Both read one guide trace and the model replayed on it, as every ELBO does:

    KL per word = E_q[ log q(h | w) - log p(h) ]  summed over the latent sites, averaged over the batch

estimated from one draw. It is the objective's KL term, what a sequence's states carry about its words in
nats. Trained by the plain ELBO from the start, a DSSM's guide falls to the prior (a KL near 0): the model
then emits the symbols as if they were independent and the flows, the guide and the state size all stop
mattering. KL warm-up (:class:`~pyroseq.infer.annealing.ScaleLatents`) is the remedy.

:class:`~pyroseq.infer.Trainer` runs :func:`check_collapse` once the warm-up is over; a plain ``SVI``
loop calls it itself, e.g. every few hundred steps after the warm-up.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyroseq.errors import NonFiniteError, first_line

__all__ = ["COLLAPSE_THRESHOLD", "PosteriorCollapseWarning", "latent_kl", "check_collapse", "nonfinite_site"]

COLLAPSE_THRESHOLD = 0.5  # nats per word: states that carry less than this are taken as unused


class PosteriorCollapseWarning(UserWarning):
    """The latent states carry almost nothing about the words (the model ignores them)."""


def _traces(
    model: Callable[..., Any], guide: Callable[..., Any], ids: Tensor, mask: Tensor
) -> tuple[poutine.Trace, poutine.Trace]:
    guide_trace = poutine.trace(guide).get_trace(ids, mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(ids, mask)
    return model_trace, guide_trace


def _latent_sites(trace: poutine.Trace) -> list[str]:
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


@torch.no_grad()
def latent_kl(
    model: Callable[..., Any], guide: Callable[..., Any], ids: Tensor, mask: Tensor
) -> float | None:
    """``E_q[log q(h | w) - log p(h)]`` per sequence (nats per word), from one draw of the guide.

    Args:
        model: a Pyro model called as ``model(ids, mask)``.
        guide: its guide, called with the same arguments.
        ids: ``(B, T)`` symbol ids.
        mask: ``(B, T)`` bool, True on real steps.

    Returns:
        The KL estimate averaged over the batch, or ``None`` when the model has no latent site (the RNNs).

    Example:
        >>> from pyroseq.data import pad_batch
        >>> from pyroseq.guides import FutureGuide
        >>> from pyroseq.models import DSSM
        >>> batch = pad_batch([[3, 4, 2], [5, 2]])
        >>> model, guide = DSSM(vocab_size=8, state_dim=2), FutureGuide(vocab_size=8, state_dim=2)
        >>> isinstance(latent_kl(model, guide, batch.ids, batch.mask), float)
        True
    """
    model_trace, guide_trace = _traces(model, guide, ids, mask)
    latent = [name for name in _latent_sites(model_trace) if name in guide_trace.nodes]
    if not latent:
        return None
    kl = sum(
        float(guide_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"]).sum())
        - float(model_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"]).sum())
        for name in latent
    )
    return kl / mask.shape[0]


def check_collapse(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    ids: Tensor,
    mask: Tensor,
    *,
    threshold: float = COLLAPSE_THRESHOLD,
) -> float | None:
    """:func:`latent_kl` on a batch, with a :class:`PosteriorCollapseWarning` when it is below
    ``threshold`` nats per word. Call it after the KL warm-up, as :class:`~pyroseq.infer.Trainer` does.

    Returns:
        The KL per word, or ``None`` for a model without latent sites (nothing to check).

    Example:
        >>> for step in range(steps):  # doctest: +SKIP
        ...     with ScaleLatents(warmup_factor(step, 500)):
        ...         svi.step(batch.ids, batch.mask)
        ...     if step >= 500 and step % 500 == 0:
        ...         check_collapse(model, guide, batch.ids, batch.mask)
    """
    kl = latent_kl(model, guide, ids, mask)
    if kl is not None and kl < threshold:
        warnings.warn(
            PosteriorCollapseWarning(
                f"the latent states carry {kl:.3f} nats per word (E_q[log q(h | w) - log p(h)], below "
                f"{threshold:g}): the model ignores them (posterior collapse), so its flows, guide and state "
                "size do not matter; train with KL warm-up: pyroseq.infer.ScaleLatents(warmup_factor(step, "
                "warmup_steps)) around each step, or Trainer(kl_warmup=...)"
            ),
            stacklevel=2,
        )
    return kl


@torch.no_grad()
def nonfinite_site(
    model: Callable[..., Any], guide: Callable[..., Any], ids: Tensor, mask: Tensor
) -> str | None:
    """The first site (guide's, then model's) whose value or log-density is NaN or infinite, as
    ``"site 'h' (log-density nan)"``; ``None`` if every site is finite on this draw."""
    try:
        with pyro.validation_enabled(False):
            model_trace, guide_trace = _traces(model, guide, ids, mask)
    except NonFiniteError as e:  # a module's own check met it first
        return first_line(e)
    for who, trace in (("guide", guide_trace), ("model", model_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            value = site["value"]
            if torch.is_floating_point(value) and not torch.isfinite(value).all():
                return f"the {who}'s site {name!r} (its value is not finite)"
            log_prob = float(site["fn"].log_prob(value).sum())
            if not math.isfinite(log_prob):
                return f"the {who}'s site {name!r} (log-density {log_prob})"
    return None
