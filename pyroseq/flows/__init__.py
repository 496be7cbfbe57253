"""Conditional transition flows ``h_t = f(xi_t; c)`` of the deep state-space model, one family per module.

Every flow is a :class:`~pyro.distributions.conditional.ConditionalTransformModule`: ``flow.condition(c)``
is a bijection on ``(..., D)`` with a one-pass inverse and log-det, so the model can score the states the
guide proposes through ``f^{-1}``. Build one by name with :func:`make_flow`; models and guides take a name
or a module through :func:`resolve_flow`.
"""

from pyroseq.flows.compose import ConditionalCompose, compose
from pyroseq.flows.coupling import ConditionalCoupling, conditional_coupling
from pyroseq.flows.diagonal import ConditionalDiagonalAffine, conditional_diagonal_affine
from pyroseq.flows.gated import ConditionalGatedTransition, conditional_gated_transition
from pyroseq.flows.registry import (
    FLOWS,
    FlowFactory,
    make_flow,
    require_inverse,
    resolve_flow,
    tensor_options,
)
from pyroseq.flows.triangular import ConditionalTriangularAffine, conditional_triangular_affine

__all__ = [
    "FLOWS",
    "FlowFactory",
    "make_flow",
    "require_inverse",
    "resolve_flow",
    "tensor_options",
    "ConditionalDiagonalAffine",
    "conditional_diagonal_affine",
    "ConditionalTriangularAffine",
    "conditional_triangular_affine",
    "ConditionalCoupling",
    "conditional_coupling",
    "ConditionalGatedTransition",
    "conditional_gated_transition",
    "ConditionalCompose",
    "compose",
]
