"""Conditional Real NVP: a stack of affine coupling layers that alternate which half they transform.

A coupling layer leaves one part of its input unchanged and shifts and scales the other part by amounts
computed from the unchanged part and the context (Dinh et al., ICLR 2017). Its inverse and Jacobian
determinant cost one pass, which is what the deep state-space model needs to score guide samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import ConditionalDenseNN
from torch import Tensor
from torch.distributions import Transform

from pyroseq.errors import ConfigError
from pyroseq.flows.base import LOG_SCALE_MAX_CLIP, LOG_SCALE_MIN_CLIP, near_identity_

__all__ = ["ConditionalCoupling", "conditional_coupling"]


class _ConditionedCoupling(Transform):
    """The coupling stack of a :class:`ConditionalCoupling` with its context fixed."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, flow: ConditionalCoupling, context: Tensor) -> None:
        super().__init__(cache_size=1)
        self.flow = flow
        self.context = context  # (..., C)
        self._log_det: Tensor | None = None  # log|det J| of the pair in the transform cache

    def _shift_log_scale(self, layer: int, kept: Tensor) -> tuple[Tensor, Tensor]:
        batch = torch.broadcast_shapes(kept.shape[:-1], self.context.shape[:-1])
        kept = kept.expand(batch + kept.shape[-1:])
        context = self.context.expand(batch + self.context.shape[-1:])
        shift, log_scale = self.flow.hypernets[layer](kept, context=context).chunk(2, dim=-1)
        log_scale = clamp_preserve_gradients(
            log_scale, self.flow.log_scale_min_clip, self.flow.log_scale_max_clip
        )
        return shift, log_scale

    def _split(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(kept, changed)`` parts of ``x``: even layers keep the first ``d`` entries, odd the last."""
        d, D = self.flow.split_dim, self.flow.input_dim
        if layer % 2 == 0:
            return x[..., :d], x[..., d:]
        return x[..., D - d :], x[..., : D - d]

    @staticmethod
    def _join(layer: int, kept: Tensor, changed: Tensor) -> Tensor:
        kept = kept.expand(changed.shape[:-1] + kept.shape[-1:])
        return torch.cat([kept, changed] if layer % 2 == 0 else [changed, kept], dim=-1)

    def _call(self, x: Tensor) -> Tensor:
        log_det = 0.0
        for layer in range(len(self.flow.hypernets)):
            kept, changed = self._split(layer, x)
            shift, log_scale = self._shift_log_scale(layer, kept)
            x = self._join(layer, kept, shift + log_scale.exp() * changed)
            log_det = log_det + log_scale.sum(-1)
        self._log_det = log_det
        return x

    def _inverse(self, y: Tensor) -> Tensor:
        log_det = 0.0
        for layer in reversed(range(len(self.flow.hypernets))):
            kept, changed = self._split(layer, y)
            shift, log_scale = self._shift_log_scale(layer, kept)
            y = self._join(layer, kept, (changed - shift) * torch.exp(-log_scale))
            log_det = log_det + log_scale.sum(-1)
        self._log_det = log_det
        return y

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        # The last pass (either direction) left its log-det beside the cached (x, y) pair; reuse it.
        cached_x, cached_y = self._cached_x_y
        if x is not cached_x or y is not cached_y:
            self(x)
        return self._log_det


class ConditionalCoupling(ConditionalTransformModule):
    r"""Conditional Real NVP: ``num_layers`` affine coupling layers alternating the half they transform.

    With ``d = split_dim``, layer ``l`` splits its input ``x`` into a kept part ``a`` and a changed part
    ``b``: the first ``d`` entries and the rest for even ``l``, the last ``d`` entries and the rest for
    odd ``l`` (the fixed permutation between layers), and maps

    .. math::

        a' = a, \qquad b' = \mu_l(a, c) + \exp(\mathrm{clip}(s_l(a, c))) \odot b, \qquad
        \log\lvert\det J_l\rvert = \textstyle\sum_i \mathrm{clip}(s_l(a, c))_i,

    so the inverse, ``b = (b' - mu_l(a', c)) exp(-s_l(a', c))``, is one pass per layer, like the forward.
    With ``D >= 2`` every entry is changed by some layer of a stack of two. With ``D = 1`` the kept part
    is empty (``d = 0``): each layer is then a conditional shift/scale of ``xi`` driven by the context
    alone, i.e. the stack reduces to :class:`~pyroseq.flows.diagonal.ConditionalDiagonalAffine`.

    The last forward or inverse pass keeps its log-det beside Pyro's transform cache, so scoring a
    sample (or the sample of an inverse) costs no extra pass.

    Args:
        hypernets: one per layer; ``hypernets[l](a, context=c)`` maps ``a (..., d)`` and ``c (..., C)``
            (same batch shape) to ``(..., 2 (D - d))``: shift, then unclipped log-scale.
        input_dim: ``D``, the size of ``xi`` and ``h``.
        split_dim: ``d``, the size of the kept part, ``0 <= d <= D // 2``.
        log_scale_min_clip: lower bound on the log-scales.
        log_scale_max_clip: upper bound on the log-scales.

    ``.condition(c)`` with ``c`` of shape ``(*batch_c, C)`` returns a transform on ``(*batch_x, D)``, where
    ``batch_c`` broadcasts against ``batch_x`` (e.g. ``c (B, C)`` with ``x (K, B, D)``).

    References:
        Dinh, Sohl-Dickstein & Bengio. Density Estimation using Real NVP. ICLR 2017.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        hypernets: Sequence[torch.nn.Module],
        *,
        input_dim: int,
        split_dim: int,
        log_scale_min_clip: float = LOG_SCALE_MIN_CLIP,
        log_scale_max_clip: float = LOG_SCALE_MAX_CLIP,
    ) -> None:
        super().__init__()
        if not 0 <= split_dim <= input_dim // 2:
            raise ConfigError(
                f"split_dim must lie in [0, input_dim // 2] = [0, {input_dim // 2}], got {split_dim}"
            )
        if not hypernets:
            raise ConfigError("a coupling flow needs at least one layer (one hypernet), got none")
        self.hypernets = torch.nn.ModuleList(hypernets)
        self.input_dim = input_dim
        self.split_dim = split_dim
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip

    def condition(self, context: Tensor) -> Transform:
        return _ConditionedCoupling(self, context)


def conditional_coupling(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] = (64,),
    *,
    num_layers: int = 2,
    log_scale_min_clip: float = LOG_SCALE_MIN_CLIP,
    log_scale_max_clip: float = LOG_SCALE_MAX_CLIP,
) -> ConditionalCoupling:
    """Build a :class:`ConditionalCoupling` of ``num_layers`` layers that each keep ``D // 2`` entries.

    Each layer's hypernet is dense, ``d + C -> hidden_dims -> 2 (D - d)``, and starts near zero output,
    so the stack starts near the identity map.
    """
    if num_layers < 1:
        raise ConfigError(f"num_layers must be at least 1, got {num_layers}")
    split_dim = input_dim // 2
    hypernets = []
    for _ in range(num_layers):
        hypernet = ConditionalDenseNN(
            split_dim, context_dim, list(hidden_dims), param_dims=[2 * (input_dim - split_dim)]
        )
        near_identity_(hypernet)
        hypernets.append(hypernet)
    return ConditionalCoupling(
        hypernets,
        input_dim=input_dim,
        split_dim=split_dim,
        log_scale_min_clip=log_scale_min_clip,
        log_scale_max_clip=log_scale_max_clip,
    )
