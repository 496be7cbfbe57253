"""Importance weights of a Pyro model and guide, and the ELBO / IWAE bounds they give per sequence.

For a sequence w and K draws ``h^k ~ q(h | w)`` from the guide, the log importance weight is

    log W_k = log p(w, h^k) - log q(h^k | w)
            = sum_t [log p(w_t | h_t^k) + log p(h_t^k | h_{t-1}^k) - log q(h_t^k | h_{t-1}^k, w_{t:T})]

and ``IWAE_K = log (1/K) sum_k W_k``; ``K = 1`` is the ELBO. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pyroseq.errors import ConfigError
from pyroseq.infer.importance import IWAE

__all__ = ["log_weights", "elbo_and_iwae"]


@torch.no_grad()
def log_weights(
    model: Callable[..., None],
    guide: Callable[..., None],
    ids: Tensor,
    mask: Tensor,
    *,
    num_particles: int,
) -> Tensor:
    """Log importance weights ``log p(w, h^k) - log q(h^k | w)`` of K guide draws per sequence.

    :meth:`pyroseq.infer.IWAE.log_weights`, added up in float64: the guide runs once with its sites
    vectorised over a particle plate at dim -2; the model is replayed on its draws. Both must take
    ``(ids, mask)`` and put every sample site inside ``pyro.plate("seqs", B, dim=-1)``; masked (padded)
    steps count through each site's mask, so model and guide should mask their latent sites alike.

    Args:
        model: the Pyro model.
        guide: the Pyro guide.
        ids: ``(B, T)`` long, padded sequences.
        mask: ``(B, T)`` bool, True on real steps.
        num_particles: K.

    Returns:
        ``(K, B)`` float64 log-weights.
    """
    return IWAE(num_particles=num_particles, dtype=torch.float64).log_weights(model, guide, ids, mask)


@torch.no_grad()
def elbo_and_iwae(
    model: Callable[..., None],
    guide: Callable[..., None],
    ids: Tensor,
    mask: Tensor,
    *,
    ks: Sequence[int] = (1, 10, 100),
) -> dict[str, float | int]:
    """Mean per-sequence ELBO and IWAE_K bounds on ``log q(w)``, with standard errors.

    One set of ``K_max = max(ks)`` guide draws serves every bound: for each K the draws are cut into
    ``K_max // K`` disjoint consecutive groups of K, each group gives ``log (1/K) sum_k W_k``, and the
    groups are averaged. When every K divides the larger ones the groups nest, and concavity of the log
    then makes ``ELBO <= IWAE_K <= IWAE_K'`` hold for every sequence, not only in expectation.

    The standard error is ``std_b / sqrt(B)`` over the B per-sequence values: the uncertainty of the mean
    over a random sample of sequences, Monte Carlo noise included.

    Returns:
        ``{"elbo", "elbo_stderr", "iwae_{K}", "iwae_{K}_stderr" (each K > 1), "num_sequences",
        "num_tokens", "num_particles"}``; bounds in nats per sequence.
    """
    if len(ks) == 0 or any(int(k) < 1 for k in ks):
        raise ConfigError(f"particle counts must be positive integers, got {list(ks)}")
    k_max = max(int(k) for k in ks)
    B = ids.shape[0]
    lw = log_weights(model, guide, ids, mask, num_particles=k_max).double()  # (K_max, B)
    out: dict[str, float | int] = {
        "num_sequences": B,
        "num_tokens": int(mask.sum()),
        "num_particles": k_max,
    }
    for k in sorted({int(k) for k in ks}):
        groups = k_max // k
        per_group = lw[: groups * k].reshape(groups, k, B)  # (G, K, B)
        bound = (torch.logsumexp(per_group, dim=1) - math.log(k)).mean(0)  # (B,)
        name = "elbo" if k == 1 else f"iwae_{k}"
        out[name] = float(bound.mean())
        out[f"{name}_stderr"] = float(bound.std() / math.sqrt(B)) if B > 1 else float("nan")
    return out
