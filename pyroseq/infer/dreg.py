r"""Doubly reparameterised gradients (DReG) for the importance-weighted bound.

With K particles ``z_k = g_phi(eps_k)`` drawn by reparameterisation from the guide ``q_phi(z | x)``,

    log w_k    = log p_theta(x, z_k) - log q_phi(z_k | x),      wt_k = w_k / sum_j w_j
    IWAE_K     = log (1/K) sum_k w_k

IWAE's gradient (Burda et al. 2016) is ``sum_k wt_k grad log w_k``. For the model it is
``sum_k wt_k grad_theta log p_theta(x, z_k)``; for the guide it holds a score-function term,

    grad_phi IWAE_K = sum_k wt_k [ (d log w_k / d z_k) (d z_k / d phi) - grad_phi log q_phi(z_k | x) ]

whose variance swamps its signal as K grows: the guide's signal-to-noise ratio decays like
``1 / sqrt(K)`` (Rainforth et al. 2018), so more particles train the model better and the guide worse.
Tucker et al. (2019) apply the reparameterisation trick a second time to the score term and find the
unbiased estimator

    grad_phi^DReG IWAE_K = sum_k wt_k^2 (d log w_k / d z_k) (d z_k / d phi)

where ``d log w_k / d z_k`` holds ``phi`` fixed inside ``log q_phi`` (only the sample path carries the
gradient). Its expectation is IWAE's and its signal-to-noise ratio grows like ``sqrt(K)``; at K = 1 it is
the "sticking the landing" ELBO gradient (Roeder et al. 2017). The model's gradient stays IWAE's.

:class:`DReG` computes it from Pyro traces, for any model and guide that :class:`~pyroseq.infer.IWAE`
takes, in one model pass and two guide passes:

1. the guide is traced as usual (its draws ``z_k`` keep their path to ``phi``);
2. each draw is aliased, ``zhat_k = z_k.view_as(z_k)``: the same value with an autograd node of its own;
3. the model is replayed at ``zhat``, giving ``log p_theta(x, zhat_k)``;
4. the guide is replayed at ``zhat`` with the ``requires_grad`` flag of its parameters (those its param
   sites name: ``pyro.param``, ``pyro.module``, :class:`~pyro.nn.PyroModule`, the set ``SVI`` optimises)
   turned off, giving ``log q_phibar(zhat_k)``: no score term, and a gradient in ``zhat`` only. Scoring a
   given value needs the guide's ``log_prob`` there (for a flow, its inverse);
5. the surrogate ``S = sum_k stop(wt_k) log w_k`` is differentiated, with a hook on each ``zhat_k`` that
   multiplies the gradient reaching it by ``wt_k``: the model's parameters receive ``wt_k``, the path into
   ``phi`` ``wt_k^2``.

A parameter that the model and the guide share gets the model's part and the guide's path part.

Under KL annealing (:class:`~pyroseq.infer.ScaleLatents`), every latent log-density is scaled by ``beta``, so
the score term is ``beta sum_k wt_k grad_phi log q``; reparameterised the same way it becomes
``beta wt_k (1 - wt_k) (d log w_k / d z_k)``, and the path's factor is ``(1 - beta) wt_k + beta wt_k^2``
(``wt_k^2`` at ``beta = 1``): the hook multiplies by ``(1 - beta) + beta wt_k``, with ``beta`` the scale of
the guide's site times its mask (a masked-out element has no score term and keeps IWAE's ``wt_k``).

References:
    G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators for Monte
    Carlo Objectives. ICLR 2019. arXiv:1810.04152.
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016. arXiv:1509.00519.
    T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh. Tighter Variational
    Bounds are Not Necessarily Better. ICML 2018. arXiv:1802.04537.
    G. Roeder, Y. Wu, D. Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference. NeurIPS 2017. arXiv:1703.09194.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer.util import is_validation_enabled
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, check_site_shape, warn_if_nan
from torch import Tensor

from pyroseq.errors import ConfigError
from pyroseq.infer.importance import IWAE

__all__ = ["DReG"]


class DReG(IWAE):
    r"""The importance-weighted bound with doubly reparameterised guide gradients (Tucker et al. 2019).

    Its value is :class:`~pyroseq.infer.IWAE`'s, ``-sum_b IWAE_K(b)`` with one bound per sequence ``b``
    (``RenyiELBO(alpha=0)``'s, particles vectorised), and so is its gradient in the model's parameters;
    the guide's gradient is ``sum_k wt_k^2 (d log w_k / d z_k)(d z_k / d phi)``, unbiased for IWAE's and of
    lower variance (see :mod:`pyroseq.infer.dreg`). It drives ``SVI`` and, through
    :meth:`differentiable_loss`, any PyTorch loop::

        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), DReG(num_particles=16))

    Every guide site must be reparameterised and the guide must score a value it did not draw (a flow
    needs its inverse); each replay costs one more guide pass without parameter gradients.

    Args:
        num_particles: K >= 1.
        max_plate_nesting: the number of plates the model nests (the particle plate goes outside them).
        plate: the name of the plate whose elements each get their own bound.

    Raises:
        ConfigError: as :class:`~pyroseq.infer.IWAE`, or the guide cannot score a value it did not draw.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> x = torch.tensor([1.0, -2.0])
        >>> def model(x):
        ...     with pyro.plate("seqs", len(x), dim=-1):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     loc = pyro.param("loc", torch.zeros(len(x)))
        ...     with pyro.plate("seqs", len(x), dim=-1):
        ...         pyro.sample("z", dist.Normal(loc, 0.8))
        >>> pyro.clear_param_store()
        >>> svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), DReG(num_particles=8))
        >>> for _ in range(300):
        ...     _ = svi.step(x)
        >>> pyro.param("loc").detach().round(decimals=1)  # the posterior means x / 2
        tensor([ 0.5000, -1.0000])
    """

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        """``-sum_b IWAE_K(b)`` as a scalar tensor whose gradient is DReG's."""
        particles = self._particles()
        model_trace, guide_trace = self._get_trace(particles(model), particles(guide), args, kwargs)
        log_w = self._trace_log_weights(model_trace, guide_trace)  # (K, B)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)  # (B,)
        weights = torch.softmax(log_w.detach(), dim=0)  # (K, B), wt_k
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and site["value"].requires_grad:
                factor = self._broadcast(weights, name, site)
                beta = _latent_scale(site)
                if beta is not None:  # ScaleLatents, or a mask: see the module's docstring
                    factor = (1 - beta) + beta * factor
                site["value"].register_hook(_scale_by(factor))
        surrogate = (weights * log_w).sum(0)  # (B,)
        loss = -(bound.detach() + surrogate - surrogate.detach()).sum()
        warn_if_nan(loss, "loss")
        return loss

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        """The model's trace at the aliased draws of a guide run, and the guide's trace replayed there with
        its parameters fixed (steps 1-4 of :mod:`pyroseq.infer.dreg`)."""
        drawn = poutine.trace(guide).get_trace(*args, **kwargs)
        aliased = drawn.copy()
        for name, site in drawn.nodes.items():
            if site["type"] == "sample" and not site["is_observed"]:
                aliased.nodes[name] = {**site, "value": site["value"].view_as(site["value"])}
        # The guide's log-densities are computed lazily (a flow's inverse runs in log_prob): inside the block.
        with _without_grad(_param_leaves(drawn)):
            try:
                guide_trace = poutine.trace(poutine.replay(guide, trace=aliased)).get_trace(*args, **kwargs)
                guide_trace = prune_subsample_sites(guide_trace)
                guide_trace.compute_score_parts()
            except (NotImplementedError, KeyError) as error:  # Pyro's cache-only flows raise KeyError
                raise ConfigError(
                    "DReG scores the guide's draws again with its parameters fixed, and the guide cannot "
                    f"score a value it did not draw ({type(error).__name__}: {error}): give its flows an "
                    "inverse, or use IWAE"
                ) from error
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting + 1)
            for trace in (model_trace, guide_trace):
                for site in trace.nodes.values():
                    if site["type"] == "sample":
                        check_site_shape(site, self.max_plate_nesting + 1)
        return model_trace, guide_trace

    def _broadcast(self, weights: Tensor, name: str, site: dict[str, Any]) -> Tensor:
        """``wt`` ``(K, B)`` laid out against the site's value: K at the particle dim, B at the plate's."""
        nesting = self.max_plate_nesting + 1
        batch_dims = site["value"].dim() - site["fn"].event_dim
        if batch_dims < nesting:
            raise ConfigError(f"DReG: the guide's site {name!r} has no particle dimension")
        seq_dim = next(f.dim for f in site["cond_indep_stack"] if f.name == self.plate)
        shape = [1] * site["value"].dim()
        shape[batch_dims - nesting] = weights.shape[0]
        shape[batch_dims + seq_dim] = weights.shape[1]
        return weights.reshape(shape)


def _latent_scale(site: dict[str, Any]) -> Tensor | None:
    """``beta``, what the site's log q is multiplied by (its scale, times its mask, laid out against its
    value); ``None`` where that is 1 everywhere."""
    beta = torch.as_tensor(site["scale"], dtype=site["value"].dtype, device=site["value"].device)
    masks = [(site["mask"], site["fn"].event_dim)]  # poutine.mask
    fn = site["fn"]
    while isinstance(fn, (MaskedDistribution, Independent, ExpandedDistribution)):  # and dist.mask()
        if isinstance(fn, MaskedDistribution):
            masks.append((fn._mask, fn.event_dim))
        fn = fn.base_dist
    for mask, event_dim in masks:
        if mask is not None:
            mask = torch.as_tensor(mask, device=beta.device)
            beta = beta * mask.reshape(mask.shape + (1,) * event_dim)
    return None if bool((beta == 1).all()) else beta


def _scale_by(factor: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda grad: grad * factor


def _param_leaves(trace: Trace) -> list[Tensor]:
    """The leaf tensors behind a trace's param sites (a constrained ``pyro.param``'s unconstrained one)."""
    leaves = []
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"]
            leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
            if leaf.is_leaf and leaf.requires_grad:
                leaves.append(leaf)
    return leaves


@contextmanager
def _without_grad(leaves: list[Tensor]) -> Iterator[None]:
    """Turn off ``requires_grad`` of ``leaves`` for the duration (their values take part as constants)."""
    for leaf in leaves:
        leaf.requires_grad_(False)
    try:
        with warnings.catch_warnings():
            # pyro.module skips (and warns about) a parameter without requires_grad: here that is the point.
            warnings.filterwarnings(
                "ignore", message=".*not registered in the param store because requires_grad"
            )
            yield
    finally:
        for leaf in leaves:
            leaf.requires_grad_(True)
