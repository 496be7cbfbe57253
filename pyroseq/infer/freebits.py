r"""Free bits (Kingma et al. 2016): the ELBO with a floor of ``lambda`` nats under each KL term.

The ELBO splits into a likelihood and a KL part, and the KL part into groups g (here: each latent site of
each sequence),

    ELBO    = E_q[log p(x | z)] - sum_g KL_g,       KL_g = E_q[log q(z_g | x) - log p(z_g | ...)]
    ELBO_FB = E_q[log p(x | z)] - sum_g max(lambda, KL_g)

so a group whose KL is below ``lambda`` is not pushed further towards the prior (the floor's gradient is
zero), and the guide keeps up to ``lambda`` nats per group for free: the remedy for posterior collapse of
Kingma et al., where the plain ELBO's KL term drives an unused latent to the prior before the decoder has
learned to use it. Where every group's KL exceeds ``lambda`` it is the ELBO, value and gradient.

What is clamped (:class:`FreeBitsELBO`): ``KL_g`` is the Monte Carlo estimate, the mean over the K particles
of ``log q - log p`` of one latent site (one sample site of the guide and the model's site of that name) at
one element of its plates. So a group is a site per sequence, and per step or per dimension where a model
puts those in plates of their own (Pyro's Deep Markov Model has a site per step). The DSSM has one latent
site, the whole trajectory ``h`` (event shape ``(T, D)``): its group is one word, ``lambda`` nats per word
(about ``lambda / 5.9`` per symbol on the symspell list). A floor per step would need each step's
``log q - log p``, which the trajectory site sums over its event (and over the guide's free padding steps)
before any objective sees it; the word is also the unit of the bound and of the cross-entropy reported.
With ``batch_average=True`` the floor applies to the KL averaged over the sequences of the batch, Kingma et
al.'s own form (``sum_j max(lambda, E_{x in M}[KL_j])`` over groups j of latent dimensions), which lets some
sequences carry less than ``lambda`` if others carry more.

References:
    D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. Improved Variational
    Inference with Inverse Autoregressive Flow. NeurIPS 2016. arXiv:1606.04934 (appendix C, free bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_identically_zero
from pyro.util import warn_if_nan
from torch import Tensor

from pyroseq.errors import ConfigError
from pyroseq.infer.importance import DifferentiableObjective

__all__ = ["FreeBitsELBO"]


class FreeBitsELBO(DifferentiableObjective):
    r"""The ELBO with each KL term ``KL_g`` replaced by ``max(lambda, KL_g)`` (free bits, Kingma et al. 2016).

    ``loss = -sum_b mean_k log p(x_b | z_k) + sum_g max(lambda, KL_g)``, with ``KL_g`` the particles' mean of
    one latent site's ``log q - log p`` at one element of its plates (one sequence, for a site in
    ``pyro.plate("seqs")`` only: the DSSM's trajectory per word); see :mod:`pyroseq.infer.freebits`. It is
    ``Trace_ELBO``'s loss (``vectorize_particles=True``) wherever every ``KL_g > lambda``. A plain ``SVI``
    objective with a ``differentiable_loss``::

        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), FreeBitsELBO(free_nats=2.0))

    Every guide site must be reparameterised (there is no score-function term).

    Args:
        free_nats: ``lambda >= 0``, the floor under each KL term, in nats.
        batch_average: floor the KL averaged over the sequences of the batch, times B (Kingma et al.'s form),
            instead of each sequence's.
        num_particles: K >= 1 vectorised particles.
        max_plate_nesting: the number of plates the model nests (the particle plate goes outside them).
        plate: the name of the sequence plate (what ``batch_average`` averages over).

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> def model(x):
        ...     with pyro.plate("seqs", len(x), dim=-1):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):  # a point at loc: log q = 0, so KL = -log N(loc; 0, 1)
        ...     loc = pyro.param("loc", torch.tensor([0.0, 2.0]))
        ...     with pyro.plate("seqs", len(x), dim=-1):
        ...         pyro.sample("z", dist.Delta(loc))
        >>> pyro.clear_param_store()
        >>> free_bits = FreeBitsELBO(free_nats=1.5)
        >>> free_bits.kl_terms(model, guide, torch.zeros(2))["z"]  # 0.92 is raised to 1.5, 2.92 counts
        tensor([0.9189, 2.9189])
    """

    def __init__(
        self,
        *,
        free_nats: float,
        batch_average: bool = False,
        num_particles: int = 1,
        max_plate_nesting: int = 1,
        plate: str = "seqs",
    ) -> None:
        free_nats = float(free_nats)
        if not (math.isfinite(free_nats) and free_nats >= 0):
            raise ConfigError(f"free_nats (the floor under each KL term) must be >= 0, got {free_nats}")
        if num_particles < 1:
            raise ConfigError(f"the number of particles K must be at least 1, got {num_particles}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.free_nats, self.batch_average, self.plate = free_nats, batch_average, plate

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple:
        """The guide's trace and the model's replayed against it, with log-densities computed."""
        return get_importance_trace("flat", self.max_plate_nesting + 1, model, guide, args, kwargs)

    def _terms(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, dict]:
        """``sum_b mean_k log p(x_b | z_k)`` and ``{group: (KL_g per plate element, a site of it)}``."""
        nesting = self.max_plate_nesting + 1
        particles = pyro.plate("num_particles_vectorized", self.num_particles, dim=-nesting)
        model_trace, guide_trace = self._get_trace(particles(model), particles(guide), args, kwargs)

        def particle_mean(log_prob: Tensor) -> Tensor:  # (K|1, *plates) -> (*plates)
            return log_prob.reshape((1,) * (nesting - log_prob.dim()) + log_prob.shape).mean(0)

        kl, auxiliary = {}, []
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if not is_identically_zero(site["score_parts"].score_function):
                raise ConfigError(
                    f"FreeBitsELBO: the guide's site {name!r} ({type(site['fn']).__name__}) is not "
                    "reparameterised; this objective has no score-function term"
                )
            log_q = particle_mean(site["log_prob"])
            if name in model_trace.nodes:
                kl[name] = (log_q - particle_mean(model_trace.nodes[name]["log_prob"]), site)
            else:
                auxiliary.append(log_q)
        likelihood = sum(
            site["log_prob"].sum() / self.num_particles
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and name not in kl
        )
        if auxiliary and kl:
            # A guide site the model lacks (an autoguide's unconstrained draw) is part of several sites' q:
            # the KL no longer splits by site, and all latent sites make one group.
            terms = [value for value, _ in kl.values()] + auxiliary
            kl = {"+".join(kl): (sum(terms[1:], terms[0]), next(iter(kl.values()))[1])}
        return torch.as_tensor(likelihood), kl

    @torch.no_grad()
    def kl_terms(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """``KL_g`` of every latent site before the floor, one value per element of its plates (``(B,)`` for
        a site in the sequence plate only); one entry ``"a+b"`` for all of them where the guide has a site
        that the model lacks."""
        return {name: value for name, (value, _) in self._terms(model, guide, args, kwargs)[1].items()}

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        """``-(sum_b mean_k log p(x_b | z_k) - sum_g max(lambda, KL_g))`` as a differentiable scalar."""
        likelihood, kl = self._terms(model, guide, args, kwargs)
        penalty = 0.0
        for name, (kl_g, site) in kl.items():
            if self.batch_average:
                dims = [f.dim for f in site["cond_indep_stack"] if f.name == self.plate]
                if not dims:
                    raise ConfigError(
                        f"FreeBitsELBO: the site {name!r} lies outside the plate {self.plate!r}"
                    )
                size = kl_g.shape[dims[0]]
                kl_g = kl_g.mean(dims[0], keepdim=True)
                penalty = penalty + size * kl_g.clamp(min=self.free_nats).sum()
            else:
                penalty = penalty + kl_g.clamp(min=self.free_nats).sum()
        loss = penalty - likelihood
        warn_if_nan(loss, "loss")
        return loss
