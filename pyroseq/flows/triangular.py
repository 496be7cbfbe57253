"""Conditional lower-triangular shift/scale flow: ``h = mu(c) + L(c) xi``.

The transition flow of the deep state-space model paper (Schmidt & Hofmann, NeurIPS 2018): given the
context ``c``, the state is Gaussian with a full covariance ``L(c) L(c)^T`` whose Cholesky factor is
produced by a network.
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

__all__ = ["ConditionalTriangularAffine", "conditional_triangular_affine"]


class _ConditionedTriangularAffine(Transform):
    """``y = shift + L x`` with shift and lower-triangular ``L`` fixed by a context."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, shift: Tensor, scale_tril: Tensor, log_diag: Tensor) -> None:
        super().__init__(cache_size=1)
        self.shift = shift  # (..., D)
        self.scale_tril = scale_tril  # (..., D, D)
        self.log_diag = log_diag  # (..., D), the log of L's diagonal

    def _call(self, x: Tensor) -> Tensor:
        return self.shift + (self.scale_tril @ x.unsqueeze(-1)).squeeze(-1)

    def _inverse(self, y: Tensor) -> Tensor:
        centred = (y - self.shift).unsqueeze(-1)  # (..., D, 1)
        return torch.linalg.solve_triangular(self.scale_tril, centred, upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        log_det = self.log_diag.sum(-1)
        return log_det.expand(torch.broadcast_shapes(x.shape[:-1], log_det.shape))


class ConditionalTriangularAffine(HypernetFlow):
    r"""Conditional lower-triangular shift/scale flow, ``h = mu(c) + L(c) xi``.

    .. math::

        h = \mu(c) + L(c)\,\xi, \qquad
        L(c) = \mathrm{diag}(\exp(\mathrm{clip}(s(c)))) + \mathrm{strictly\_lower}(m(c)), \qquad
        \log\lvert\det J\rvert = \textstyle\sum_i \log L_{ii}(c),

    so ``p(h | c) = N(h; mu(c), L(c) L(c)^T)``. ``hypernet(c)`` gives the shift ``mu``, the unclipped
    log-diagonal ``s`` and the ``D (D - 1) / 2`` strictly-lower entries ``m`` (row-major, as
    ``torch.tril_indices(D, D, -1)``). The inverse is one triangular solve,
    ``xi = L(c)^{-1} (h - mu(c))``. Forward and inverse cost ``O(D^2)`` per sample; the hypernet has
    ``D (D + 3) / 2`` outputs. The log-diagonal is clipped to ``[log_scale_min_clip, log_scale_max_clip]``
    (gradient passing through), which keeps ``L`` well conditioned.

    Args:
        hypernet: maps a context ``(..., C)`` to ``(..., D (D + 3) / 2)``: shift, log-diagonal,
            strictly-lower entries.
        input_dim: ``D``, the size of ``xi`` and ``h``.
        log_scale_min_clip: lower bound on ``log L_ii``.
        log_scale_max_clip: upper bound on ``log L_ii``.

    ``.condition(c)`` with ``c`` of shape ``(*batch_c, C)`` returns a transform on ``(*batch_x, D)``, where
    ``batch_c`` broadcasts against ``batch_x`` (e.g. ``c (B, C)`` with ``x (K, B, D)``).

    References:
        Schmidt & Hofmann. Deep State Space Models for Unconditional Word Generation. NeurIPS 2018.
    """

    def __init__(self, hypernet: torch.nn.Module, *, input_dim: int, **clips: float) -> None:
        super().__init__(hypernet, input_dim=input_dim, **clips)
        self.register_buffer("tril_index", torch.tril_indices(input_dim, input_dim, -1), persistent=False)

    def condition(self, context: Tensor) -> Transform:
        D = self.input_dim
        shift, log_diag, lower = self.hypernet(context).split([D, D, D * (D - 1) // 2], dim=-1)
        log_diag = clamp_preserve_gradients(log_diag, self.log_scale_min_clip, self.log_scale_max_clip)
        rows, cols = self.tril_index
        strictly_lower = lower.new_zeros(lower.shape[:-1] + (D, D))
        strictly_lower[..., rows, cols] = lower
        scale_tril = strictly_lower + torch.diag_embed(log_diag.exp())  # (..., D, D)
        return _ConditionedTriangularAffine(shift, scale_tril, log_diag)


def conditional_triangular_affine(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] = (64,),
    *,
    log_scale_min_clip: float = LOG_SCALE_MIN_CLIP,
    log_scale_max_clip: float = LOG_SCALE_MAX_CLIP,
) -> ConditionalTriangularAffine:
    """Build a :class:`ConditionalTriangularAffine` with a dense hypernet ``C -> hidden_dims -> D (D+3)/2``.

    The hypernet starts near zero output, so ``L`` starts near the identity and the shift near 0.
    """
    num_params = input_dim * (input_dim + 3) // 2
    hypernet = DenseNN(context_dim, list(hidden_dims), param_dims=[num_params])
    near_identity_(hypernet)
    return ConditionalTriangularAffine(
        hypernet,
        input_dim=input_dim,
        log_scale_min_clip=log_scale_min_clip,
        log_scale_max_clip=log_scale_max_clip,
    )
