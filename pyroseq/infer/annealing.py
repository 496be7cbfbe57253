"""KL annealing: the latent sites' log-densities scaled by a factor beta that warms up from 0 to 1.

With every latent site of the model and every site of the guide scaled by ``beta``, Pyro's objectives
compute

    ELBO_beta = E_q[log p(w | h)] - beta E_q[log q(h | w) - log p(h)]

(and IWAE from the log-weights ``log p(w | h) + beta (log p(h) - log q(h | w))``). At ``beta = 1`` these are
the ordinary bounds; below 1 the KL term is down-weighted, the remedy of Bowman et al. (2016) for
posterior collapse: trained by the plain ELBO from the start, a DSSM's guide falls to the prior within a
few hundred steps (``E_q[log q - log p] ~ 0.1`` nats per word) and the model learns the words' symbols as
if they were independent. Warming ``beta`` up from near 0 lets the states carry the words first.

:class:`ScaleLatents` is a Pyro effect handler, so it works around any model and guide and any objective
(``Trace_ELBO``, :class:`~pyroseq.infer.IWAE`, ``RenyiELBO``) in a plain ``SVI`` loop::

    for step in range(steps):
        with ScaleLatents(warmup_factor(step, 2000)):
            svi.step(ids, mask)

Observed sites are left as they are, and an evaluation outside the handler is the unscaled bound.

References:
    S. R. Bowman, L. Vilnis, O. Vinyals, A. M. Dai, R. Jozefowicz, S. Bengio. Generating Sentences from a
    Continuous Space. CoNLL 2016. arXiv:1511.06349.
"""

from __future__ import annotations

import math

from pyro.poutine.messenger import Messenger

from pyroseq.errors import ConfigError

__all__ = ["ScaleLatents", "warmup_factor", "check_warmup_start", "DEFAULT_KL_WARMUP", "default_kl_warmup"]


class ScaleLatents(Messenger):
    """Scale the log-density of every latent (unobserved) sample site by ``factor``.

    Like ``pyro.poutine.scale``, but observed sites keep their scale, so that around an objective (which
    runs both the guide and the model replayed against it) it weights the KL term of the bound and not
    the likelihood. Use it as a context manager or as ``ScaleLatents(factor)(fn)``.

    Args:
        factor: ``beta``, a finite number in ``[0, 1]``.

    Examples:
        >>> import pyro, pyro.distributions as dist, torch
        >>> def model():
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.5))
        >>> with pyro.poutine.trace() as tr, ScaleLatents(0.25):
        ...     model()
        >>> tr.trace.nodes["z"]["scale"], tr.trace.nodes["x"]["scale"]
        (0.25, 1.0)
    """

    def __init__(self, factor: float) -> None:
        factor = float(factor)
        if not (math.isfinite(factor) and 0.0 <= factor <= 1.0):
            raise ConfigError(f"the latent scale (KL annealing factor) must be in [0, 1], got {factor}")
        super().__init__()
        self.factor = factor

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.factor * msg["scale"]


DEFAULT_KL_WARMUP = 500
"""KL warm-up steps of a model with latent states by default: trained by the plain ELBO the DSSM collapses
(its guide's KL fell to 0.09 nats/word in 1,000 steps on the word task); with a warm-up it does not. 500
is the warm-up of the lever screen's recipe (``docs/results.md``, issue 27)."""


def default_kl_warmup(total_steps: int) -> int:
    """:data:`DEFAULT_KL_WARMUP` steps, or half of ``total_steps`` if that is fewer, so that the bound is
    the ordinary one for at least the second half of any run."""
    return min(DEFAULT_KL_WARMUP, total_steps // 2)


def warmup_factor(step: int, warmup_steps: int, start: float = 0.0) -> float:
    """``beta`` at 0-based training ``step`` of a linear warm-up over ``warmup_steps`` from ``start``:
    ``start + (1 - start) min(1, (step + 1) / warmup_steps)``, so it is ``1 / warmup_steps`` at the first
    step (with ``start = 0``) and 1 from step ``warmup_steps - 1`` on; ``warmup_steps = 0`` means no warm-up
    (always 1). Pyro's Deep Markov Model example anneals with ``start = 0.2`` (its
    ``--minimum-annealing-factor``) over 1,000 epochs.

    Examples:
        >>> [warmup_factor(s, 4) for s in range(6)]
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
        >>> [round(warmup_factor(s, 4, start=0.2), 2) for s in range(5)]
        [0.4, 0.6, 0.8, 1.0, 1.0]
        >>> warmup_factor(0, 0)
        1.0
    """
    if warmup_steps < 0 or step < 0:
        raise ConfigError(f"warm-up steps and step must be >= 0, got {warmup_steps} and {step}")
    check_warmup_start(start)
    return 1.0 if warmup_steps == 0 else start + (1.0 - start) * min(1.0, (step + 1) / warmup_steps)


def check_warmup_start(start: float) -> None:
    """Raise :class:`ConfigError` unless the warm-up's first factor ``start`` is in ``[0, 1]``."""
    if not (isinstance(start, (int, float)) and math.isfinite(start) and 0.0 <= start <= 1.0):
        raise ConfigError(
            f"kl_warmup_start (the KL annealing factor a warm-up starts from) must be in [0, 1], "
            f"got {start!r}",
            params=("kl_warmup_start",),
        )
