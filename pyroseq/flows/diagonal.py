"""Conditional diagonal shift/scale flow: ``h = mu(c) + sigma(c) * xi``.

The simplest transition flow of the deep state-space model (Schmidt & Hofmann, NeurIPS 2018): given the
context ``c``, the state is the noise shifted and scaled element-wise, so
``p(h | c) = N(h; mu(c), diag sigma(c)^2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import DenseNN
from torch import Tensor
from torch.distributions import Transform

from pyroseq.flows.base import LOG_SCALE_MAX_CLIP, LOG_SCALE_MIN_CLIP, HypernetFlow, near_identity_

__all__ = ["ConditionalDiagonalAffine", "conditional_diagonal_affine", "ConditionedDiagonalAffine"]


class ConditionedDiagonalAffine(Transform):
    """``y = shift + exp(log_scale) * x`` with shift and log-scale fixed by a context."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, shift: Tensor, log_scale: Tensor) -> None:
        super().__init__(cache_size=1)
        self.shift = shift  # (..., D)
        self.log_scale = log_scale  # (..., D)

    def _call(self, x: Tensor) -> Tensor:
        return self.shift + self.log_scale.exp() * x

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.shift) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        log_det = self.log_scale.sum(-1)
        return log_det.expand(torch.broadcast_shapes(x.shape[:-1], log_det.shape))


class ConditionalDiagonalAffine(HypernetFlow):
    r"""Conditional diagonal shift/scale flow, ``h = mu(c) + sigma(c) * xi``.

    .. math::

        h = \mu(c) + \sigma(c) \odot \xi, \qquad
        \sigma(c) = \exp(\mathrm{clip}(s(c))), \qquad
        \log\lvert\det J\rvert = \textstyle\sum_i \log \sigma_i(c),

    where ``(mu(c), s(c))`` are the two halves of ``hypernet(c)``. The inverse is
    ``xi = (h - mu(c)) / sigma(c)``. Clipping the log-scale to ``[log_scale_min_clip, log_scale_max_clip]``
    (on by default, as in Pyro's affine flows) keeps the scale away from 0 and infinity; the gradient
    passes through the clip.

    Args:
        hypernet: maps a context ``(..., C)`` to ``(..., 2 * D)``: shift, then unclipped log-scale.
        input_dim: ``D``, the size of ``xi`` and ``h``.
        log_scale_min_clip: lower bound on the log-scale.
        log_scale_max_clip: upper bound on the log-scale.

    ``.condition(c)`` with ``c`` of shape ``(*batch_c, C)`` returns a transform on ``(*batch_x, D)``, where
    ``batch_c`` broadcasts against ``batch_x`` (e.g. ``c (B, C)`` with ``x (K, B, D)``).

    References:
        Schmidt & Hofmann. Deep State Space Models for Unconditional Word Generation. NeurIPS 2018.
    """

    def condition(self, context: Tensor) -> Transform:
        shift, log_scale = self.hypernet(context).split(self.input_dim, dim=-1)  # (..., D) each
        log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
        return ConditionedDiagonalAffine(shift, log_scale)


def conditional_diagonal_affine(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] = (64,),
    *,
    log_scale_min_clip: float = LOG_SCALE_MIN_CLIP,
    log_scale_max_clip: float = LOG_SCALE_MAX_CLIP,
) -> ConditionalDiagonalAffine:
    """Build a :class:`ConditionalDiagonalAffine` with a dense hypernet ``C -> hidden_dims -> 2 D``.

    The hypernet starts near zero output, so the flow starts near the identity map (scale about 1).
    """
    hypernet = DenseNN(context_dim, list(hidden_dims), param_dims=[2 * input_dim])
    near_identity_(hypernet)
    return ConditionalDiagonalAffine(
        hypernet,
        input_dim=input_dim,
        log_scale_min_clip=log_scale_min_clip,
        log_scale_max_clip=log_scale_max_clip,
    )
