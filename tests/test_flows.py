"""The contract every transition flow keeps, and the flow registry's errors.

One contract test runs over every family of :mod:`pyroseq.flows`, a composition, and a Pyro conditional flow
passed in directly: shapes, inverse round trip (with the context broadcast over a particle dim), the
transform cache, log|det J| against an autograd Jacobian in float64, gradients of the map and its inverse
against finite differences, gradients to every parameter, and save/load.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.distributions.conditional import ConditionalTransformedDistribution, ConditionalTransformModule

from pyroseq.errors import ConfigError
from pyroseq.flows import (
    FLOWS,
    ConditionalCompose,
    ConditionalCoupling,
    ConditionalTriangularAffine,
    compose,
    make_flow,
    require_inverse,
    resolve_flow,
)

CONTEXT_DIM = 2
HIDDEN = (8,)
# Every registered flow (a new family is covered the day it is registered) and four compositions, among them
# the DSSM's default, the gated transition after the couplings (results.md, fourteenth study).
NAMED = [*FLOWS, "coupling+coupling", "triangular+coupling", "gated+coupling", "coupling+coupling+gated"]
# Krishnan's gated transition starts as a random walk, h = c + softplus(.) xi, not near the identity in xi.
RANDOM_WALK = {"gated", "gated+coupling", "coupling+coupling+gated"}


def _named(name: str) -> Callable[[int, int], ConditionalTransformModule]:
    return lambda input_dim, context_dim: make_flow(
        name, input_dim=input_dim, context_dim=context_dim, hidden_dims=HIDDEN
    )


BUILDERS: dict[str, Callable[[int, int], ConditionalTransformModule]] = {name: _named(name) for name in NAMED}
# A user-supplied Pyro flow; Pyro's own coupling needs D >= 2 (its hypernet squeezes size-1 outputs).
BUILDERS["pyro_affine_coupling"] = lambda input_dim, context_dim: T.conditional_affine_coupling(
    input_dim, context_dim, hidden_dims=list(HIDDEN)
)
CASES = [(name, 3) for name in BUILDERS] + [(name, 1) for name in NAMED]

# (context batch shape, x batch shape): plain batches, and a particle dim in front of the context's batch.
SHAPES = [((), ()), ((4,), (4,)), ((3, 2), (3, 2)), ((3,), (5, 3))]


def _log_det_by_autograd(flow: ConditionalTransformModule, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """log|det dy/dx| of one vector ``x (D,)`` under ``flow.condition(c)``, ``c (C,)``."""
    jacobian = torch.autograd.functional.jacobian(lambda v: flow.condition(c)(v), x)  # (D, D)
    return torch.linalg.slogdet(jacobian).logabsdet


@pytest.mark.parametrize(("family", "input_dim"), CASES, ids=[f"{n}-D{d}" for n, d in CASES])
def test_flow_contract(family: str, input_dim: int) -> None:
    torch.manual_seed(0)
    build = BUILDERS[family]
    flow = build(input_dim, CONTEXT_DIM).double()
    c = torch.randn(3, CONTEXT_DIM, dtype=torch.float64)
    x = torch.randn(5, 3, input_dim, dtype=torch.float64)

    if family in NAMED and family not in RANDOM_WALK:  # starts near the identity map
        assert (flow.condition(c)(x) - x).abs().max() < 0.1

    with torch.no_grad():  # move away from the init so that no check below holds trivially
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))

    # Shapes, inverse round trip through a fresh (uncached) transform, and the cache.
    for batch_c, batch_x in SHAPES:
        cb = torch.randn(*batch_c, CONTEXT_DIM, dtype=torch.float64)
        xb = torch.randn(*batch_x, input_dim, dtype=torch.float64)
        transform = flow.condition(cb)
        yb = transform(xb)
        assert transform.event_dim == 1 and transform.bijective
        assert yb.shape == xb.shape
        assert transform.log_abs_det_jacobian(xb, yb).shape == batch_x
        assert transform.inv(yb) is xb, "scoring a sample must reuse the cached noise"
        assert not torch.allclose(yb, xb, atol=1e-3)
        fresh = flow.condition(cb)
        y_copy = yb.clone()
        x_back = fresh.inv(y_copy)
        torch.testing.assert_close(x_back, xb, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(
            fresh.log_abs_det_jacobian(x_back, y_copy), transform.log_abs_det_jacobian(xb, yb)
        )

    # Broadcast context: each (particle, sequence) element matches the unbatched flow, and its
    # log-det matches the autograd Jacobian's.
    transform = flow.condition(c)
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)  # (5, 3)
    for k in range(x.shape[0]):
        for b in range(x.shape[1]):
            torch.testing.assert_close(y[k, b], flow.condition(c[b])(x[k, b]))
            torch.testing.assert_close(log_det[k, b], _log_det_by_autograd(flow, x[k, b], c[b]))

    # Gradients of the map and of its inverse against finite differences (the triangular flow's backward
    # is hand-written); the inverse gets a fresh transform on each call so that its cache is not hit.
    c_small = c[:2].clone().requires_grad_()
    x_small = x[0, :2].clone().requires_grad_()
    y_small = flow.condition(c_small)(x_small).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda cc, xx: flow.condition(cc)(xx), (c_small, x_small))
    assert torch.autograd.gradcheck(lambda cc, yy: flow.condition(cc).inv(yy), (c_small, y_small))

    # A gradient reaches every parameter through the density of given (not sampled) states; 64 of them, so
    # that a ReLU (the gated transition's relu(m(c))) is not off at all of them.
    base = dist.Normal(torch.zeros(input_dim, dtype=torch.float64), 1.0).to_event(1)
    flow.zero_grad()
    c_many = torch.randn(64, CONTEXT_DIM, dtype=torch.float64)
    x_many = torch.randn(64, input_dim, dtype=torch.float64)
    loss = -ConditionalTransformedDistribution(base, [flow]).condition(c_many).log_prob(x_many).sum()
    loss.backward()
    for name, parameter in flow.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name

    # Save/load: a fresh instance given the state dict computes the same map.
    other = build(input_dim, CONTEXT_DIM).double()
    with torch.no_grad():
        assert not torch.allclose(other.condition(c)(x), y)
        other.load_state_dict(flow.state_dict())
        other_transform = other.condition(c)
        other_y = other_transform(x)
        assert torch.equal(other_y, y)
        assert torch.equal(other_transform.log_abs_det_jacobian(x, other_y), log_det.detach())


def test_make_flow_names_and_sizes() -> None:
    flow = make_flow("triangular + coupling", input_dim=4, context_dim=2)
    assert isinstance(flow, ConditionalCompose)
    assert [type(part) for part in flow.parts] == [ConditionalTriangularAffine, ConditionalCoupling]

    with pytest.raises(ConfigError) as error:
        make_flow("planar", input_dim=4, context_dim=2)
    assert all(name in str(error.value) for name in FLOWS)
    with pytest.raises(ConfigError, match="'bogus'"):
        make_flow("triangular+bogus", input_dim=4, context_dim=2)
    with pytest.raises(ConfigError, match="unknown flow"):
        make_flow("triangular+", input_dim=4, context_dim=2)

    bad_sizes = [
        {"input_dim": 0, "context_dim": 2},
        {"input_dim": 4, "context_dim": -1},
        {"input_dim": 4, "context_dim": 2, "hidden_dims": (8, 0)},
        {"input_dim": 4, "context_dim": 2, "hidden_dims": ()},
    ]
    for sizes in bad_sizes:
        with pytest.raises(ConfigError, match="positive"):
            make_flow("diagonal", **sizes)


@pytest.mark.parametrize("name", [name for name in NAMED if name not in RANDOM_WALK])
def test_deeper_hypernets_start_near_identity_too(name: str) -> None:
    """The near-identity init shrinks the hypernet's *output* layer, whatever its depth."""
    torch.manual_seed(0)
    flow = make_flow(name, input_dim=3, context_dim=CONTEXT_DIM, hidden_dims=(8, 8)).double()
    c = torch.randn(4, CONTEXT_DIM, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert (flow.condition(c)(x) - x).abs().max() < 0.1


def test_make_flow_default_hidden_width_is_64() -> None:
    def size(flow: ConditionalTransformModule) -> int:
        return sum(p.numel() for p in flow.parameters())

    for name in ("triangular", "coupling+coupling"):
        default = make_flow(name, input_dim=4, context_dim=2)
        assert size(default) == size(make_flow(name, input_dim=4, context_dim=2, hidden_dims=(64,)))


def test_require_inverse() -> None:
    input_dim = 3
    without_inverse = {
        "ConditionalPlanar": T.conditional_planar(input_dim, CONTEXT_DIM, hidden_dims=list(HIDDEN)),
        "ConditionalRadial": T.conditional_radial(input_dim, CONTEXT_DIM, hidden_dims=list(HIDDEN)),
        "ConditionalNeuralAutoregressive": T.conditional_neural_autoregressive(
            input_dim, CONTEXT_DIM, hidden_dims=list(HIDDEN)
        ),
        "ConditionalTriangularAffine+ConditionalPlanar": compose(
            make_flow("triangular", input_dim=input_dim, context_dim=CONTEXT_DIM),
            T.conditional_planar(input_dim, CONTEXT_DIM, hidden_dims=list(HIDDEN)),
        ),
    }
    for name, flow in without_inverse.items():
        with pytest.raises(ConfigError, match=re.escape(f"{name} has no inverse")):
            require_inverse(flow, input_dim=input_dim, context_dim=CONTEXT_DIM)
    for build in BUILDERS.values():
        require_inverse(build(input_dim, CONTEXT_DIM).double(), input_dim=input_dim, context_dim=CONTEXT_DIM)


def test_resolve_flow_requires_the_inverse_only_when_asked() -> None:
    """The DSSM's transition scores its states by the inverse; a guide's flow only samples forward."""
    planar = T.conditional_planar(3, CONTEXT_DIM, hidden_dims=list(HIDDEN))
    sizes = {"input_dim": 3, "context_dim": CONTEXT_DIM, "flow_hidden": 4, "role": "test flow"}
    assert resolve_flow(planar, need_inverse=False, **sizes) is planar
    with pytest.raises(ConfigError, match="ConditionalPlanar has no inverse"):
        resolve_flow(planar, need_inverse=True, **sizes)
    coupling = make_flow("coupling", input_dim=3, context_dim=CONTEXT_DIM, hidden_dims=HIDDEN)
    assert resolve_flow(coupling, need_inverse=True, **sizes) is coupling


def test_triangular_index_buffers_stay_out_of_the_state_dict() -> None:
    flow = make_flow("triangular", input_dim=3, context_dim=CONTEXT_DIM, hidden_dims=HIDDEN)
    assert set(flow.state_dict()) == {f"hypernet.{name}" for name in flow.hypernet.state_dict()}
    rows, cols = flow.tril_index
    assert torch.equal(flow.tril_flat_index, rows * 3 + cols)


def test_triangular_clipping_bounds_the_log_det_but_not_the_conditioning() -> None:
    """The docstring's claim: clipping log L_ii bounds log |det L|; the strictly-lower entries are free."""
    D = 3
    hypernet = torch.nn.Linear(CONTEXT_DIM, D * (D + 3) // 2).double()
    with torch.no_grad():
        hypernet.weight.zero_()
        hypernet.bias.zero_()
        hypernet.bias[D : 2 * D] = 100.0  # log-diagonal far above the clip
        hypernet.bias[2 * D :] = 1e4  # strictly-lower entries, unclipped
    flow = ConditionalTriangularAffine(hypernet, input_dim=D)
    transform = flow.condition(torch.zeros(CONTEXT_DIM, dtype=torch.float64))
    x = torch.zeros(D, dtype=torch.float64)
    L = torch.autograd.functional.jacobian(transform, x)  # (D, D), the forward map is mu + L x
    with torch.no_grad():
        log_det = float(transform.log_abs_det_jacobian(x, transform(x)))
    assert log_det == pytest.approx(D * flow.log_scale_max_clip)
    assert torch.linalg.cond(L) > 1e6


def test_spline_names_the_order_pyro_gives_it() -> None:
    """``spline`` is Pyro's default (linear rational) spline, ``rqspline`` the rational-quadratic one, as
    docs/models.md says."""
    from pathlib import Path

    from pyro.distributions.transforms import conditional_spline

    assert inspect.signature(conditional_spline).parameters["order"].default == "linear"
    orders = {}
    for name in ("spline", "rqspline"):
        (part,) = make_flow(name, input_dim=2, context_dim=CONTEXT_DIM).parts
        orders[name] = part.order
    assert orders == {"spline": "linear", "rqspline": "quadratic"}
    docs = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| `spline` |"))
    assert 'order="linear"' in row and "rational-quadratic" not in row


def test_a_flow_that_fails_on_the_probe_is_one_line_config_error() -> None:
    class Broken(ConditionalTransformModule):
        def condition(self, context):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\n  (a second line of detail)")

    with pytest.raises(ConfigError) as info:
        resolve_flow(
            Broken(), input_dim=2, context_dim=2, flow_hidden=4, need_inverse=False, role="test flow"
        )
    assert "\n" not in str(info.value) and str(info.value).endswith("cannot be multiplied")


def test_the_gated_transition_starts_as_a_random_walk_and_gates_its_mean() -> None:
    """Krishnan et al.'s transition: mu(c) = (1 - g) (W c + b) + g m(c) with W = I, b = 0 at the start,
    sigma(c) = softplus(S relu(m(c))); h = mu + sigma xi."""
    torch.manual_seed(0)
    flow = make_flow("gated", input_dim=3, context_dim=3, hidden_dims=(8,)).double()
    assert torch.equal(flow.linear.weight, torch.eye(3, dtype=torch.float64)) and not flow.linear.bias.any()
    c = torch.randn(5, 3, dtype=torch.float64)
    xi = torch.randn(5, 3, dtype=torch.float64)
    gate = torch.sigmoid(flow.gate(c))
    proposed = flow.proposed_mean(c)
    loc = (1 - gate) * c + gate * proposed
    scale = torch.nn.functional.softplus(flow.to_scale(torch.relu(proposed)))
    torch.testing.assert_close(flow.condition(c)(xi), loc + scale * xi)
    with torch.no_grad():  # a closed gate leaves the linear path: a random walk with the learned scale
        flow.gate.layers[-1].bias.fill_(-50.0)
    torch.testing.assert_close(flow.condition(c)(xi), c + scale * xi)
    # a wider context (a guide's [h_{t-1}, b_t]): the identity on its first D entries
    wide = make_flow("gated", input_dim=3, context_dim=5)
    assert torch.equal(wide.linear.weight, torch.eye(3, 5))
