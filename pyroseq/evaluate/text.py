"""Running-text metrics for autoregressive models: per-symbol NLL, perplexity, bits per character, accuracy.

On ``(B, T)`` chunks of running text, each chunk read from BOS with teacher forcing:

    NLL        = -(1/N) sum_{b,t: mask} log q(w_t | w_{<t})        nats per symbol
    perplexity = exp(NLL)
    BPC        = NLL / ln 2                                       bits per character (symbol)
    accuracy   = (1/N) sum_{b,t: mask} [argmax_v q(v | w_{<t}) = w_t]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyroseq.data.batch import Batch
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate.bounds import log_weights
from pyroseq.models.base import AutoregressiveModel, SequenceModel

__all__ = ["token_log_probs", "text_metrics", "evaluate_text", "evaluate_text_latent", "text_scores"]


@torch.no_grad()
def token_log_probs(model: AutoregressiveModel, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-forced ``log q(w_t | w_{<t})`` of every symbol, and whether the model's argmax was ``w_t``.

    Args:
        model: an autoregressive model.
        ids: ``(B, T)`` long symbols; the first is predicted from BOS.

    Returns:
        ``(log_probs (B, T) float, correct (B, T) bool)``.
    """
    logits = model.teacher_forced_logits(ids)  # (B, T, V)
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, ids[..., None]).squeeze(-1)  # (B, T)
    return log_probs, logits.argmax(dim=-1) == ids


def text_metrics(log_probs: Tensor, correct: Tensor, mask: Tensor) -> dict[str, float | int]:
    """Per-symbol NLL (nats), perplexity, bits per character and accuracy from per-symbol scores.

    Args:
        log_probs: ``(...)`` ``log q(w_t | w_{<t})`` of each target symbol.
        correct: ``(...)`` bool, whether the argmax prediction was the target.
        mask: ``(...)`` bool, the symbols to count.

    Returns:
        ``{"nll_nats", "perplexity", "bpc", "accuracy", "tokens", "estimator": "exact", "samples": 0}``.
    """
    mask = mask.bool()
    n = int(mask.sum())
    if n == 0:
        raise DataError("there are no symbols to evaluate (the mask is all False)")
    nll = float(-log_probs.double()[mask].sum() / n)
    return {
        "nll_nats": nll,
        "perplexity": math.exp(nll),
        "bpc": nll / math.log(2),
        "accuracy": float(correct[mask].double().mean()),
        "tokens": n,
        "estimator": "exact",
        "samples": 0,
    }


@torch.no_grad()
def evaluate_text(
    model: AutoregressiveModel, batch: Batch, *, batch_size: int = 256, progress: bool = True
) -> dict[str, float | int]:
    """:func:`text_metrics` of ``model`` over the chunks of ``batch``, in minibatches of ``batch_size``.

    Each chunk is read from BOS, so its first symbols are predicted with little context; longer chunks
    make this matter less. Put the model in eval mode first if it has dropout.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    log_probs, correct = [], []
    starts = range(0, len(batch), batch_size)
    for start in tqdm(starts, desc="text chunks", unit="batch", disable=not progress):
        lp, ok = token_log_probs(model, batch.ids[start : start + batch_size])
        log_probs.append(lp)
        correct.append(ok)
    return text_metrics(torch.cat(log_probs), torch.cat(correct), batch.mask)


@torch.no_grad()
def evaluate_text_latent(
    model: Callable[..., None],
    guide: Callable[..., None],
    batch: Batch,
    *,
    num_samples: int = 100,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float | int | str | None]:
    """Per-symbol NLL, perplexity and BPC of a latent-state model on text chunks, from IWAE_K.

    ``log q(chunk)`` has no closed form for a state-space model; ``IWAE_K`` (K guide particles per chunk)
    is a lower bound on it, so the reported NLL ``= -sum IWAE_K / N`` is an upper bound on the true one
    (``"estimator": "iwae"``, ``"samples": K``). Next-symbol accuracy is not defined without a predictive
    filter and is reported as None.
    """
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"num_samples and batch_size must be at least 1, got {num_samples}, {batch_size}")
    total = 0.0
    starts = range(0, len(batch), batch_size)
    for start in tqdm(starts, desc="text chunks", unit="batch", disable=not progress):
        ids, mask = batch.ids[start : start + batch_size], batch.mask[start : start + batch_size]
        lw = log_weights(model, guide, ids, mask, num_particles=num_samples).double()  # (K, b)
        total += float((torch.logsumexp(lw, dim=0) - math.log(num_samples)).sum())
    n = int(batch.mask.sum())
    nll = -total / n
    return {
        "nll_nats": nll,
        "perplexity": math.exp(nll),
        "bpc": nll / math.log(2),
        "accuracy": None,
        "tokens": n,
        "estimator": "iwae",
        "samples": num_samples,
    }


def text_scores(
    model: SequenceModel,
    guide: Callable[..., None],
    batch: Batch,
    *,
    estimator: str | None = None,
    num_samples: int = 100,
    progress: bool = False,
) -> dict[str, float | int | str | None]:
    """Per-symbol NLL, perplexity, BPC (and accuracy) of ``model`` on text chunks, by the one estimator
    that fits it: ``"exact"`` (:func:`evaluate_text`) for an autoregressive model, ``"iwae"``
    (:func:`evaluate_text_latent`, K = ``num_samples``) for a state-space model.

    Raises:
        ConfigError: ``estimator`` is given and is not the one that fits the model.
    """
    model.require_symbols("a text estimator")
    fits = "exact" if model.autoregressive else "iwae"
    if estimator not in (None, fits):
        why = (
            "an autoregressive model's test NLL is exact"
            if model.autoregressive
            else ("a state-space model's text NLL is an IWAE bound with its guide")
        )
        raise ConfigError(f"estimator {estimator}: {why}; use {fits}", params=("estimator",))
    if model.autoregressive:
        return evaluate_text(model, batch, progress=progress)
    return evaluate_text_latent(model, guide, batch, num_samples=num_samples, progress=progress)
