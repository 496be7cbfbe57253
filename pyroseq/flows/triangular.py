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
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.distributions import Transform

from pyroseq.flows.base import LOG_SCALE_MAX_CLIP, LOG_SCALE_MIN_CLIP, HypernetFlow, near_identity_

__all__ = ["ConditionalTriangularAffine", "conditional_triangular_affine"]


class _TriangularProduct(torch.autograd.Function):
    r"""``L x``, or ``L^{-1} x`` when ``inverse``, for a lower-triangular ``L`` given by its entries.

    The gradient w.r.t. each stored ``L_{ij}`` is ``g_i x_j`` for ``y = L x``, and ``-(L^{-T} g)_i y_j``
    for ``y = L^{-1} x``. Autograd through ``matmul`` or ``torch.linalg.solve_triangular`` would form
    the whole ``D x D`` outer product as a batched matmul (and, for the solve, then zero its upper
    triangle); gathering the stored positions gives the same values in a fraction of the time.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(entries: Tensor, x: Tensor, scale_tril: Tensor, index: Tensor, inverse: bool) -> Tensor:
        # entries (..., P) are L[index[0], index[1]]; scale_tril (..., D, D) is L built from them, detached.
        if inverse:
            return torch.linalg.solve_triangular(scale_tril, x.unsqueeze(-1), upper=False).squeeze(-1)
        return (scale_tril @ x.unsqueeze(-1)).squeeze(-1)  # (..., D)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: Tensor) -> None:
        _, x, scale_tril, index, inverse = inputs
        ctx.save_for_backward(scale_tril, output if inverse else x, index)
        ctx.inverse = inverse

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        scale_tril, right, (rows, cols) = ctx.saved_tensors  # right: x for L x, y for L^{-1} x
        if ctx.inverse:
            grad_x = torch.linalg.solve_triangular(scale_tril.mT, grad.unsqueeze(-1), upper=True).squeeze(-1)
            left = -grad_x
        else:
            grad_x = (scale_tril.mT @ grad.unsqueeze(-1)).squeeze(-1)
            left = grad
        grad_entries = None
        if ctx.needs_input_grad[0]:
            shape = left.shape[:-1] + rows.shape  # (..., P)
            grad_entries = left.gather(-1, rows.expand(shape)) * right.gather(-1, cols.expand(shape))
        # Autograd sums both over the dims that the context or x was broadcast along.
        return grad_entries, grad_x, None, None, None


class _ConditionedTriangularAffine(Transform):
    """``y = shift + L x`` with shift and lower-triangular ``L`` fixed by a context."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self, shift: Tensor, log_diag: Tensor, entries: Tensor, index: Tensor, flat_index: Tensor
    ) -> None:
        super().__init__(cache_size=1)
        self.shift = shift  # (..., D)
        self.log_diag = log_diag  # (..., D), the log of L's diagonal
        self.entries = entries  # (..., P), L's entries at index: its diagonal, then strictly-lower part
        self.index = index  # (2, P), rows and columns
        D = shift.shape[-1]
        # One scatter into the flattened L (flat_index (P,) = rows * D + cols) is several times cheaper
        # than zeros, an indexed assignment and diag_embed; gradients reach entries through
        # _TriangularProduct, not through L.
        flat = entries.detach()
        scale_tril = flat.new_zeros(flat.shape[:-1] + (D * D,)).scatter_(
            -1, flat_index.expand(flat.shape), flat
        )
        self.scale_tril = scale_tril.unflatten(-1, (D, D))  # (..., D, D)

    def _call(self, x: Tensor) -> Tensor:
        return self.shift + _TriangularProduct.apply(self.entries, x, self.scale_tril, self.index, False)

    def _inverse(self, y: Tensor) -> Tensor:
        return _TriangularProduct.apply(self.entries, y - self.shift, self.scale_tril, self.index, True)

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
    (gradient passing through), which bounds ``log |det L|`` to ``D`` times those bounds; the strictly-lower
    entries are not clipped, so ``L`` can still be ill conditioned. ``L x`` and ``L^{-1} x`` have a
    hand-written first-order backward to ``L``'s ``D (D + 1) / 2`` entries; a second derivative raises.

    Args:
        hypernet: maps a context ``(..., C)`` to ``(..., D (D + 3) / 2)``: shift, log-diagonal,
            strictly-lower entries.
        input_dim: ``D``, the size of ``xi`` and ``h``.
        **clips: ``log_scale_min_clip`` and ``log_scale_max_clip``, the bounds on ``log L_ii``.

    ``.condition(c)`` with ``c`` of shape ``(*batch_c, C)`` returns a transform on ``(*batch_x, D)``, where
    ``batch_c`` broadcasts against ``batch_x`` (e.g. ``c (B, C)`` with ``x (K, B, D)``).

    References:
        Schmidt & Hofmann. Deep State Space Models for Unconditional Word Generation. NeurIPS 2018.
    """

    def __init__(self, hypernet: torch.nn.Module, *, input_dim: int, **clips: float) -> None:
        super().__init__(hypernet, input_dim=input_dim, **clips)
        D = input_dim
        diagonal = torch.arange(D).expand(2, D)
        self.register_buffer(
            "tril_index", torch.cat([diagonal, torch.tril_indices(D, D, -1)], dim=1), persistent=False
        )  # (2, D (D + 1) / 2), where the diagonal then the strictly-lower entries sit in L
        rows, cols = self.tril_index
        self.register_buffer("tril_flat_index", rows * D + cols, persistent=False)  # the same, in L.flatten()

    def condition(self, context: Tensor) -> Transform:
        D = self.input_dim
        shift, log_diag, lower = self.hypernet(context).split([D, D, D * (D - 1) // 2], dim=-1)
        log_diag = clamp_preserve_gradients(log_diag, self.log_scale_min_clip, self.log_scale_max_clip)
        entries = torch.cat([log_diag.exp(), lower], dim=-1)  # (..., D (D + 1) / 2)
        return _ConditionedTriangularAffine(shift, log_diag, entries, self.tril_index, self.tril_flat_index)


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
