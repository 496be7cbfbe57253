"""The SVI objectives by name: the ELBO, the importance-weighted bound (IWAE), DReG (its doubly
reparameterised gradients) and FIVO (a particle filter's bound); the importance-weighted ones live in
:mod:`pyroseq.infer.importance`, FIVO in :mod:`pyroseq.infer.fivo`."""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer import ELBO, JitTrace_ELBO, Trace_ELBO

from pyroseq.errors import ConfigError
from pyroseq.infer.dreg import DReG
from pyroseq.infer.fivo import FIVO
from pyroseq.infer.importance import IWAE, DifferentiableObjective

__all__ = [
    "resolve_recipe",
    "OBJECTIVES",
    "DEFAULT_PARTICLES",
    "UNANNEALED",
    "check_objective_applies",
    "default_objective",
    "DifferentiableObjective",
    "IWAE",
    "ShapeJitTrace_ELBO",
    "make_objective",
]

OBJECTIVES = ("elbo", "iwae", "dreg", "fivo")

UNANNEALED = ("fivo",)
"""Objectives that score the state laws themselves, so a KL warm-up
(:class:`~pyroseq.infer.annealing.ScaleLatents`) cannot reach them: they train with ``kl_warmup=0`` (after a
warm-up under another objective)."""

DEFAULT_PARTICLES = 8
"""K of the default objective of a model with latent states (DReG). At the README's budget (3,000 steps of
256 words) K = 8 ended 0.18-0.21 nats/word below K = 4 on two 10,000-word lists (0.49 on 300 names), at the
same CE per CPU second on one thread; a second thread pays for more than half of its extra cost
(``docs/results.md``, section (g), "Eight particles by default", issue 27)."""


def default_objective(*, latent: bool, jit: bool = False) -> tuple[str, int]:
    """The objective name and particle count that pyroseq trains a model with by default.

    DReG with :data:`DEFAULT_PARTICLES` particles for a model with latent states (the doubly
    reparameterised importance-weighted bound trained the DSSM fastest per step in the lever screen of
    ``docs/results.md``); the exact ELBO with one particle for a model without (any importance-weighted
    bound is then its exact log-likelihood, K times over) and under ``jit`` (no importance-weighted bound
    has a JIT version).
    """
    return ("dreg", DEFAULT_PARTICLES) if latent and not jit else ("elbo", 1)


def resolve_recipe(
    objective: str | None, particles: int | None, *, latent: bool, jit: bool = False
) -> tuple[str, int]:
    """``(objective, particles)`` with each ``None`` filled in by pyroseq's recipe.

    An objective left at None is :func:`default_objective`'s. Particles left at None are
    :data:`DEFAULT_PARTICLES` for an importance-weighted objective of a model with latent states (IWAE or
    DReG with one particle would be the ELBO under another name), and 1 for the ELBO or a model without
    latent states. Given values are kept as they are (the objective builders check them).

    Example:
        >>> resolve_recipe("iwae", None, latent=True), resolve_recipe(None, None, latent=False)
        (('iwae', 8), ('elbo', 1))
    """
    if objective is None:
        objective = default_objective(latent=latent, jit=jit)[0]
    if particles is None:
        particles = DEFAULT_PARTICLES if latent and objective != "elbo" else 1
    return objective, particles


def check_objective_applies(objective: str, *, states: bool, kl_warmup: int, who: str) -> None:
    """Raise :class:`ConfigError` where ``objective`` cannot train the model as asked: FIVO filters the states
    of a state-space model (``states``), and a warm-up cannot reach an objective of :data:`UNANNEALED` (it
    would be silently ignored)."""
    if objective == "fivo" and not states:
        raise ConfigError(
            f"{who} has no states for objective 'fivo' to filter (it needs a state-space model, a DSSM): use "
            "elbo",
            params=("objective", "model"),
        )
    if objective in UNANNEALED and kl_warmup:
        raise ConfigError(
            f"objective {objective!r} scores the state laws itself, so a KL warm-up would not reach it: set "
            f"kl_warmup=0 (got {kl_warmup}); to warm up, train under another objective first and continue "
            "from those weights",
            params=("objective", "kl_warmup"),
        )


class ShapeJitTrace_ELBO(JitTrace_ELBO):
    """``JitTrace_ELBO`` that traces once per shape of its tensor arguments.

    Pyro's version keys its one compiled function by argument count and keyword values only, so a batch
    padded to a longer T is silently cut to the traced length, and a shorter one fails deep in TorchScript.
    Here each new ``(B, T)`` is traced afresh (a few seconds); padding every batch to one T (as the word
    samplers do) keeps it to one trace.
    """

    def loss_and_surrogate_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Any:
        key = tuple(tuple(a.shape) if torch.is_tensor(a) else None for a in args)
        traces = self.__dict__.setdefault("_traces_by_shape", {})
        self._loss_and_surrogate_loss = traces.get(key)  # None: the parent traces a new one
        result = super().loss_and_surrogate_loss(model, guide, *args, **kwargs)
        traces[key] = self._loss_and_surrogate_loss
        return result


def make_objective(name: str, *, particles: int = 1, jit: bool = False) -> ELBO:
    """An SVI objective over models whose sequences sit in ``pyro.plate("seqs", dim=-1)``.

    * ``"elbo"``: ``Trace_ELBO`` (:class:`ShapeJitTrace_ELBO` with ``jit=True``) averaging ``particles``
      draws;
    * ``"iwae"``: ``IWAE_K = E[log (1/K) sum_k w_k]`` per sequence with K vectorised particles
      (:class:`IWAE`, equal to ``RenyiELBO(alpha=0)`` and differentiable). There is no JIT version;
    * ``"dreg"``: the same bound with doubly reparameterised guide gradients
      (:class:`~pyroseq.infer.dreg.DReG`, Tucker et al. 2019);
    * ``"fivo"``: the bound of a particle filter with K particles that proposes with the guide and
      resamples where the effective sample size falls below K / 2 (:class:`~pyroseq.infer.fivo.FIVO`;
      FIVO/AESMC), for a state-space model and a guide whose trajectory is one ``StateTrajectory``. It
      cannot be annealed (:data:`UNANNEALED`).

    Particles are vectorised (a plate at dim -2), which DESIGN §5 measured 4-6x faster than a loop.
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")
    if particles < 1:
        raise ConfigError(f"the number of particles K must be at least 1, got {particles}")
    vectorize = particles > 1
    if name in ("iwae", "dreg", "fivo"):
        if jit:
            raise ConfigError(
                f"there is no JIT version of the {name.upper()} objective; drop jit=True", params=("jit",)
            )
        if name == "dreg":
            return DReG(num_particles=particles)
        if name == "fivo":
            return FIVO(num_particles=particles)
        return IWAE(num_particles=particles)
    if jit:
        return ShapeJitTrace_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=1,
            ignore_jit_warnings=True,
        )
    return Trace_ELBO(num_particles=particles, vectorize_particles=vectorize, max_plate_nesting=1)
