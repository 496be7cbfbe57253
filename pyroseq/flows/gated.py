"""Krishnan et al.'s gated transition as a conditional flow: the transition of the Deep Markov Model.

Given the context ``c`` (the previous state ``h_{t-1}``), a gate and a proposed mean come from two small
networks, and a linear path starts as the identity, so that the chain starts as a random walk:

    g(c)     = sigmoid(G(c))                        the gate, in (0, 1) per dimension
    m(c)     = M(c)                                 the proposed mean (a non-linear update)
    mu(c)    = (1 - g(c)) * (W c + b) + g(c) * m(c) W starts as the identity (on the first D inputs), b at 0
    sigma(c) = softplus(S relu(m(c)))
    h        = mu(c) + sigma(c) * xi

so ``p(h | c) = N(h; mu(c), diag sigma(c)^2)``: a diagonal affine map of the noise, whose inverse is
``xi = (h - mu(c)) / sigma(c)`` and log-det ``sum log sigma(c)``. ``G`` and ``M`` are MLPs with ReLUs
(``C -> hidden_dims -> D``), ``S`` a linear map ``D -> D``. The log-scale is clipped as in the other flows.

References:
    R. G. Krishnan, U. Shalit and D. Sontag. Structured Inference Networks for Nonlinear State Space
    Models. AAAI 2017. (Pyro's ``examples/dmm.py``, ``GatedTransition``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import DenseNN
from torch import Tensor, nn
from torch.distributions import Transform

from pyroseq.flows.base import LOG_SCALE_MAX_CLIP, LOG_SCALE_MIN_CLIP
from pyroseq.flows.diagonal import ConditionedDiagonalAffine

__all__ = ["ConditionalGatedTransition", "conditional_gated_transition"]


class ConditionalGatedTransition(ConditionalTransformModule):
    r"""Krishnan et al.'s gated transition, ``h = mu(c) + sigma(c) * xi`` with a gated mean.

    .. math::

        \mu(c) = (1 - g(c)) \odot (W c + b) + g(c) \odot m(c), \qquad
        \sigma(c) = \mathrm{softplus}(S\, \mathrm{relu}(m(c))), \qquad
        \log\lvert\det J\rvert = \textstyle\sum_i \log \sigma_i(c).

    Args:
        gate: maps a context ``(..., C)`` to the gate's logits ``(..., D)``.
        proposed_mean: maps a context ``(..., C)`` to the proposed mean ``(..., D)``.
        input_dim: ``D``, the size of ``xi`` and ``h``.
        context_dim: ``C``, the size of the context.
        log_scale_min_clip: lower bound on the log-scale.
        log_scale_max_clip: upper bound on the log-scale.

    Example:
        >>> flow = conditional_gated_transition(4, 4, hidden_dims=(8,))
        >>> f = flow.condition(torch.randn(2, 4))
        >>> h = f(torch.randn(2, 4))
        >>> f.inv(h).shape, f.log_abs_det_jacobian(f.inv(h), h).shape
        (torch.Size([2, 4]), torch.Size([2]))

    References:
        Krishnan, Shalit & Sontag. Structured Inference Networks for Nonlinear State Space Models. AAAI 2017.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        gate: nn.Module,
        proposed_mean: nn.Module,
        *,
        input_dim: int,
        context_dim: int,
        log_scale_min_clip: float = LOG_SCALE_MIN_CLIP,
        log_scale_max_clip: float = LOG_SCALE_MAX_CLIP,
    ) -> None:
        super().__init__()
        self.gate = gate
        self.proposed_mean = proposed_mean
        self.linear = nn.Linear(context_dim, input_dim)
        self.to_scale = nn.Linear(input_dim, input_dim)
        self.input_dim = input_dim
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip
        with torch.no_grad():  # the linear path starts as the identity on the first D context entries
            self.linear.weight.copy_(torch.eye(input_dim, context_dim))
            self.linear.bias.zero_()

    def condition(self, context: Tensor) -> Transform:
        gate = torch.sigmoid(self.gate(context))  # (..., D)
        proposed = self.proposed_mean(context)  # (..., D)
        shift = (1 - gate) * self.linear(context) + gate * proposed  # (..., D)
        scale = nn.functional.softplus(self.to_scale(torch.relu(proposed)))  # (..., D)
        log_scale = clamp_preserve_gradients(scale.log(), self.log_scale_min_clip, self.log_scale_max_clip)
        return ConditionedDiagonalAffine(shift, log_scale)


def conditional_gated_transition(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] = (64,),
    *,
    log_scale_min_clip: float = LOG_SCALE_MIN_CLIP,
    log_scale_max_clip: float = LOG_SCALE_MAX_CLIP,
) -> ConditionalGatedTransition:
    """Build a :class:`ConditionalGatedTransition` whose gate and proposed mean are ReLU MLPs
    ``C -> hidden_dims -> D`` (Pyro's example: one hidden layer of 200 for a state of 100)."""
    return ConditionalGatedTransition(
        DenseNN(context_dim, list(hidden_dims), param_dims=[input_dim]),
        DenseNN(context_dim, list(hidden_dims), param_dims=[input_dim]),
        input_dim=input_dim,
        context_dim=context_dim,
        log_scale_min_clip=log_scale_min_clip,
        log_scale_max_clip=log_scale_max_clip,
    )
