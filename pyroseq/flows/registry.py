"""Transition flows by name, the check that a flow can score states through its inverse, and
:func:`resolve_flow`, which models and guides call on the flow they are given.

Names are the keys of :data:`FLOWS`; a ``+`` composes them in the order written, so ``"triangular+coupling"``
applies the triangular flow to the noise first, then the coupling layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import conditional_spline

from pyroseq.errors import ConfigError, first_line
from pyroseq.flows.base import near_identity_
from pyroseq.flows.compose import ConditionalCompose, compose
from pyroseq.flows.coupling import conditional_coupling
from pyroseq.flows.diagonal import conditional_diagonal_affine
from pyroseq.flows.gated import conditional_gated_transition
from pyroseq.flows.triangular import conditional_triangular_affine

__all__ = ["FlowFactory", "FLOWS", "make_flow", "require_inverse", "resolve_flow", "tensor_options"]

FlowFactory = Callable[[int, int, Sequence[int]], ConditionalTransformModule]
"""``factory(input_dim, context_dim, hidden_dims)`` -> a conditional flow on ``(..., input_dim)``."""


def _spline(input_dim: int, context_dim: int, hidden_dims: Sequence[int]) -> ConditionalTransformModule:
    """Pyro's conditional linear rational spline (8 bins on ``[-3, 3]``, identity outside), on vectors.

    Its hypernet starts near zero output: equal bins, so the spline starts close to the identity.
    """
    spline = conditional_spline(input_dim, context_dim, hidden_dims=list(hidden_dims))
    near_identity_(spline.nn)
    return compose(spline)


def _rqspline(input_dim: int, context_dim: int, hidden_dims: Sequence[int]) -> ConditionalTransformModule:
    """Pyro's conditional rational-quadratic spline (Durkan et al., NeurIPS 2019; 8 bins on ``[-3, 3]``,
    identity outside), on vectors, starting close to the identity.

    Each bin is a ratio of quadratics, monotone with continuous derivative: a smoother, more expressive
    element-wise bijection than the linear-rational ``spline``, at a similar cost.
    """
    spline = conditional_spline(input_dim, context_dim, hidden_dims=list(hidden_dims), order="quadratic")
    near_identity_(spline.nn)
    return compose(spline)


FLOWS: dict[str, FlowFactory] = {
    "diagonal": conditional_diagonal_affine,
    "triangular": conditional_triangular_affine,
    "coupling": conditional_coupling,
    "spline": _spline,
    "rqspline": _rqspline,
    "gated": conditional_gated_transition,
}
"""Name -> factory of every named transition flow; add an entry to make a new flow nameable."""


def make_flow(
    name: str, *, input_dim: int, context_dim: int, hidden_dims: Sequence[int] = (64,)
) -> ConditionalTransformModule:
    """The conditional flow called ``name``, e.g. ``"triangular"`` or ``"triangular+coupling"``.

    Args:
        name: a key of :data:`FLOWS`, or several joined by ``+`` (composed, first name acting first).
        input_dim: ``D``, the size of the noise and the state.
        context_dim: ``C``, the size of the context (``D`` for the model's ``h_{t-1}``; more in a guide).
        hidden_dims: hidden layer sizes of every hypernet in the flow.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), or a size that is not positive.

    Examples:
        A flow conditioned on a context is a bijection with a one-pass inverse and a log-det per sample:

        >>> import torch
        >>> flow = make_flow("triangular+coupling", input_dim=4, context_dim=3)
        >>> f = flow.condition(torch.randn(8, 3))  # contexts (B, C)
        >>> xi = torch.randn(8, 4)  # noise (B, D)
        >>> h = f(xi)
        >>> torch.allclose(f.inv(h), xi, atol=1e-5), f.log_abs_det_jacobian(xi, h).shape
        (True, torch.Size([8]))
    """
    parts = [part.strip() for part in name.split("+")]
    unknown = [part for part in parts if part not in FLOWS]
    if unknown:
        raise ConfigError(
            f"unknown flow {name!r}: {', '.join(repr(p) for p in unknown)} not among {', '.join(FLOWS)}; "
            "compose names with '+', e.g. 'triangular+coupling'"
        )
    hidden_dims = tuple(hidden_dims)
    sizes = {"input_dim": input_dim, "context_dim": context_dim}
    sizes.update({f"hidden_dims[{i}]": size for i, size in enumerate(hidden_dims)})
    bad = {key: size for key, size in sizes.items() if not (isinstance(size, int) and size > 0)}
    if bad or not hidden_dims:
        problems = ", ".join(f"{key}={size!r}" for key, size in bad.items()) or "hidden_dims=()"
        raise ConfigError(f"flow sizes must be positive integers and hidden_dims non-empty; got {problems}")
    flows = [FLOWS[part](input_dim, context_dim, hidden_dims) for part in parts]
    return flows[0] if len(flows) == 1 else compose(*flows)


def tensor_options(module: torch.nn.Module) -> dict[str, torch.dtype | torch.device]:
    """The ``dtype`` and ``device`` of ``module``'s parameters as keyword arguments for a probe tensor
    (``{}`` for a module without parameters)."""
    parameter = next(module.parameters(), None)
    return {} if parameter is None else {"dtype": parameter.dtype, "device": parameter.device}


def _describe(flow: ConditionalTransformModule) -> str:
    """The class name of ``flow``, or of its parts joined by ``+`` for a composition."""
    if isinstance(flow, ConditionalCompose):
        return "+".join(_describe(part) for part in flow.parts)
    return type(flow).__name__


def require_inverse(flow: ConditionalTransformModule, *, input_dim: int, context_dim: int) -> None:
    """Check that ``flow`` can invert any state, as the model's transition flow must.

    The model scores the states that the guide proposes through ``f^{-1}``, so its flow needs an analytic
    inverse. The check conditions ``flow`` on a zero context and inverts a zero state (a fresh transform,
    so nothing is in its cache). Pyro's ``conditional_planar`` and ``conditional_radial`` invert only
    values they produced themselves (``KeyError``); ``conditional_neural_autoregressive`` never does
    (``NotImplementedError``).

    Raises:
        ConfigError: ``flow`` has no inverse; the message names the flows that have one.
    """
    like = tensor_options(flow)
    with torch.no_grad():
        transform = flow.condition(torch.zeros(context_dim, **like))
        try:
            transform.inv(torch.zeros(input_dim, **like))
        except (NotImplementedError, KeyError) as error:
            raise ConfigError(
                "the model must score states the guide proposes through f^{-1}; "
                f"{_describe(flow)} has no inverse; use one of {', '.join(FLOWS)} (or a composition "
                "such as 'triangular+coupling'), or a Pyro conditional flow with an inverse such as "
                "conditional_affine_coupling or conditional_spline"
            ) from error


def resolve_flow(
    flow: str | ConditionalTransformModule,
    *,
    input_dim: int,
    context_dim: int,
    flow_hidden: int,
    need_inverse: bool,
    role: str,
) -> ConditionalTransformModule:
    """A conditional flow from a name of :func:`pyroseq.flows.make_flow` or a ready module, checked.

    The check runs the flow once: it must map ``(input_dim,)`` to ``(input_dim,)`` given a
    ``(context_dim,)`` context and, when ``need_inverse``, pass :func:`pyroseq.flows.require_inverse`.

    Args:
        flow: a name such as ``"triangular"`` or ``"triangular+coupling"``, or a
            :class:`~pyro.distributions.conditional.ConditionalTransformModule`.
        input_dim: the dimension the flow transforms.
        context_dim: the dimension of the context it is conditioned on.
        flow_hidden: hidden width of the flow's networks (names only).
        need_inverse: whether the inverse is required.
        role: what the flow is for, used in error messages.
    """
    if isinstance(flow, str):
        flow = make_flow(flow, input_dim=input_dim, context_dim=context_dim, hidden_dims=(flow_hidden,))
    if not isinstance(flow, ConditionalTransformModule):
        raise ConfigError(
            f"the {role} must be a flow name or a pyro ConditionalTransformModule, got {type(flow).__name__}"
        )
    like = tensor_options(flow)
    x = torch.zeros(2, input_dim, **like)
    try:
        with torch.no_grad():
            y = flow.condition(torch.zeros(2, context_dim, **like))(x)
    except RuntimeError as e:
        raise ConfigError(
            f"the {role} {type(flow).__name__} does not accept states of dimension {input_dim} with a "
            f"context of dimension {context_dim}: {first_line(e)}"
        ) from None
    if y.shape != x.shape:
        raise ConfigError(
            f"the {role} {type(flow).__name__} maps ({input_dim},) to {tuple(y.shape[1:])}; it must keep "
            "the dimension"
        )
    if need_inverse:
        require_inverse(flow, input_dim=input_dim, context_dim=context_dim)
    return flow
