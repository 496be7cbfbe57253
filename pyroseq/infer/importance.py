"""Importance-weighted objectives as differentiable losses: the base they share and the IWAE bound.

:class:`~pyroseq.infer.dreg.DReG`, :class:`~pyroseq.infer.freebits.FreeBitsELBO` and
:class:`~pyroseq.infer.fivo.FIVO` build on :class:`DifferentiableObjective`; :mod:`pyroseq.infer.objectives`
names them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_identically_zero
from pyro.util import warn_if_nan
from torch import Tensor

from pyroseq.errors import ConfigError

__all__ = ["DifferentiableObjective", "IWAE"]


class DifferentiableObjective(ELBO):
    """An objective whose ``loss`` and ``loss_and_grads`` (what ``SVI`` calls) come from its
    ``differentiable_loss``, a scalar tensor summed over sequences like Pyro's ELBOs."""

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple:
        raise NotImplementedError(f"{type(self).__name__} computes its loss without Pyro's particle traces")

    @torch.no_grad()
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss as a float, without gradients."""
        return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss as a float, with its gradients accumulated into the parameters (for ``SVI``)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())


class IWAE(DifferentiableObjective):
    r"""The importance-weighted bound (Burda et al. 2016) as a differentiable loss, one bound per sequence.

    For each sequence b of the batch and K particles ``z_k ~ q(z | w_b)`` drawn at once (a vectorised
    plate at dim ``-(max_plate_nesting + 1)``),

        log w_{k,b} = sum over sites in sequence b of  log p(w_b, z_k) - log q(z_k | w_b)
        IWAE_K(b)   = logsumexp_k log w_{k,b} - log K
        loss        = -sum_b IWAE_K(b)

    computed from Pyro traces (the guide traced, the model replayed against it), so it holds for any
    model and guide whose sample sites all lie in the plate named ``plate``, whatever the sites are
    called or however many there are. Its value and its gradient equal
    ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)``'s; unlike it, the loss is a tensor
    to call ``backward`` on, so it drives any PyTorch loop::

        iwae = IWAE(num_particles=8).differentiable_loss
        loss = iwae(model, guide, ids, mask)  # summed over sequences, like Pyro's ELBOs
        loss.backward()

    and ``IWAE(num_particles=8)(model, guide)`` is Pyro's ``ELBOModule`` (a ``torch.nn.Module`` whose
    forward is the loss), the form that Lightning and ``DistributedDataParallel`` wrap.

    :meth:`log_weights` is the one computation of importance log-weights in pyroseq: the evaluation's
    bounds and IWAE estimators (:func:`pyroseq.evaluate.log_weights`) use it too.

    Args:
        num_particles: K >= 1.
        max_plate_nesting: the number of plates the model nests (the particle plate goes outside them).
        plate: the name of the plate whose elements each get their own bound.
        dtype: the dtype the sites' log-densities are added up in (None: their own); evaluation adds
            many float32 terms in float64.

    Raises:
        ConfigError: a sample site lies outside ``plate`` (the bound would be one joint bound over the
            batch), or, where gradients are recorded, a guide site cannot be reparameterised (this
            estimator has no score-function term).
    """

    def __init__(
        self,
        *,
        num_particles: int = 1,
        max_plate_nesting: int = 1,
        plate: str = "seqs",
        dtype: torch.dtype | None = None,
    ) -> None:
        if num_particles < 1:
            raise ConfigError(
                f"the number of particles num_particles must be at least 1, got {num_particles}",
                params=("num_particles",),
            )
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.plate = plate
        self.dtype = dtype

    def log_weights(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        """``log w_{k,b}``, shape ``(K, B)``: one importance log-weight per particle and sequence."""
        particles = self._particles()
        return self._trace_log_weights(*self._get_trace(particles(model), particles(guide), args, kwargs))

    def _particles(self) -> pyro.plate:
        """The plate of the K vectorised particles, outside the model's own plates."""
        return pyro.plate("num_particles_vectorized", self.num_particles, dim=-(self.max_plate_nesting + 1))

    def _trace_log_weights(self, model_trace: Any, guide_trace: Any) -> Tensor:
        """``log w_{k,b}``, ``(K, B)``, from a guide's trace and the model's replayed against it."""
        nesting = self.max_plate_nesting + 1
        log_w: Tensor | float = 0.0
        for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                reparameterised = sign > 0 or is_identically_zero(site["score_parts"].score_function)
                if not reparameterised and torch.is_grad_enabled():
                    raise ConfigError(
                        f"IWAE: the guide's site {name!r} ({type(site['fn']).__name__}) is not "
                        "reparameterised; this estimator has no score-function term: use objective elbo",
                        params=("objective",),
                    )
                term = self._per_sequence(name, site, nesting)
                log_w = log_w + sign * (term if self.dtype is None else term.to(self.dtype))
        if not torch.is_tensor(log_w):
            raise ConfigError("IWAE: the model and guide have no sample sites")
        return log_w.expand(self.num_particles, log_w.shape[1])  # (K, B), also where no site is latent

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple:
        """The guide's trace and the model's replayed against it, with log-densities computed."""
        return get_importance_trace("flat", self.max_plate_nesting + 1, model, guide, args, kwargs)

    def _per_sequence(self, name: str, site: dict[str, Any], nesting: int) -> Tensor:
        """A site's log-density summed over everything but particles and sequences: ``(K|1, B|1)``."""
        frames = [f for f in site["cond_indep_stack"] if f.name == self.plate]
        if not frames:
            raise ConfigError(
                f"IWAE: the site {name!r} lies outside the plate {self.plate!r}; put every sample site "
                "inside it, or the bound is one joint bound over the whole batch"
            )
        log_prob = site["log_prob"]
        log_prob = log_prob.reshape((1,) * (nesting - log_prob.dim()) + log_prob.shape)
        seq_dim = frames[0].dim
        others = [d for d in range(-nesting + 1, 0) if d != seq_dim]
        if others:
            log_prob = log_prob.sum(others, keepdim=True)
        return log_prob.reshape(log_prob.shape[0], log_prob.shape[seq_dim])  # (K|1, B|1)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        """``-sum_b IWAE_K(b)`` as a differentiable scalar tensor."""
        log_w = self.log_weights(model, guide, *args, **kwargs)  # (K, B)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)  # (B,)
        loss = -bound.sum()
        warn_if_nan(loss, "loss")
        return loss
