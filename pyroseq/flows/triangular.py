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


class _TriangularSolve(torch.autograd.Function):
    r"""``L^{-1} x`` for a lower-triangular ``L`` given by its entries.

    The gradient w.r.t. each stored ``L_{ij}`` is ``-(L^{-T} g)_i y_j`` for ``y = L^{-1} x``. Autograd
    through ``torch.linalg.solve_triangular`` would form the whole ``D x D`` outer product as a batched
    matmul and then zero its upper triangle; gathering the stored positions gives the same values in a
    fraction of the time.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(entries: Tensor, x: Tensor, scale_tril: Tensor, index: Tensor) -> Tensor:
        # entries (..., P) are L[index[0], index[1]]; scale_tril (..., D, D) is L built from them, detached.
        return torch.linalg.solve_triangular(scale_tril, x.unsqueeze(-1), upper=False).squeeze(-1)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: Tensor) -> None:
        _, _, scale_tril, index = inputs
        ctx.save_for_backward(scale_tril, output, index)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        scale_tril, y, (rows, cols) = ctx.saved_tensors
        grad_x = torch.linalg.solve_triangular(scale_tril.mT, grad.unsqueeze(-1), upper=True).squeeze(-1)
        grad_entries = None
        if ctx.needs_input_grad[0]:
            shape = grad_x.shape[:-1] + rows.shape  # (..., P)
            grad_entries = -grad_x.gather(-1, rows.expand(shape)) * y.gather(-1, cols.expand(shape))
        # Autograd sums both over the dims that the context or x was broadcast along.
        return grad_entries, grad_x, None, None


class _ConditionedTriangularAffine(Transform):
    """``y = shift + L x`` with shift and lower-triangular ``L`` fixed by a context."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self, shift: Tensor, log_diag: Tensor, lower: Tensor, flow: ConditionalTriangularAffine
    ) -> None:
        super().__init__(cache_size=1)
        self.shift = shift  # (..., D)
        self.log_diag = log_diag  # (..., D), the log of L's diagonal
        self.diag = log_diag.exp()  # (..., D)
        self.lower = lower  # (..., D (D - 1) / 2), L's strictly-lower part, row-major
        self.flow = flow  # its index buffers

    def _call(self, x: Tensor) -> Tensor:
        # L x without forming L: each strictly-lower entry times its column of x (gathered by a 0/1
        # matrix), summed into its row (by another). Two thin matmuls cost about half of scattering L and
        # a batched matrix-vector product, and autograd's backward through them is two more.
        column, row = self.flow.lower_column.to(x.dtype), self.flow.lower_row.to(x.dtype)
        return self.shift + self.diag * x + (self.lower * (x @ column)) @ row

    def _inverse(self, y: Tensor) -> Tensor:
        D = self.shift.shape[-1]
        entries = torch.cat([self.diag, self.lower], dim=-1)  # (..., D (D + 1) / 2): diagonal, then lower
        # One scatter into the flattened L is several times cheaper than zeros, an indexed assignment and
        # diag_embed; gradients reach the entries through _TriangularSolve, not through L.
        flat = entries.detach()
        scale_tril = flat.new_zeros(flat.shape[:-1] + (D * D,)).scatter_(
            -1, self.flow.tril_flat_index.expand(flat.shape), flat
        )
        scale_tril = scale_tril.unflatten(-1, (D, D))
        return _TriangularSolve.apply(entries, y - self.shift, scale_tril, self.flow.tril_index)

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
    entries are not clipped, so ``L`` can still be ill conditioned. ``L x`` never forms ``L``: the
    strictly-lower entries meet their columns of ``x`` through two thin 0/1 matmuls, which autograd
    differentiates. ``L^{-1} x`` scatters ``L`` once and has a hand-written first-order backward to its
    ``D (D + 1) / 2`` entries; a second derivative through the inverse raises.

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
        # 0/1 matrices of the forward map: x @ lower_column puts x's column j at each strictly-lower entry
        # (i, j); (entries) @ lower_row sums the entries of each row i.
        rows, cols = torch.tril_indices(D, D, -1)
        entry = torch.arange(rows.numel())
        lower_column = torch.zeros(D, rows.numel())
        lower_column[cols, entry] = 1.0
        lower_row = torch.zeros(rows.numel(), D)
        lower_row[entry, rows] = 1.0
        self.register_buffer("lower_column", lower_column, persistent=False)  # (D, D (D - 1) / 2)
        self.register_buffer("lower_row", lower_row, persistent=False)  # (D (D - 1) / 2, D)

    def condition(self, context: Tensor) -> Transform:
        D = self.input_dim
        shift, log_diag, lower = self.hypernet(context).split([D, D, D * (D - 1) // 2], dim=-1)
        log_diag = clamp_preserve_gradients(log_diag, self.log_scale_min_clip, self.log_scale_max_clip)
        return _ConditionedTriangularAffine(shift, log_diag, lower, self)


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
