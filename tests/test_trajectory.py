"""Tests of the state-trajectory distribution (pyroseq.flows.trajectory): drawing only the running rows."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from pyroseq.flows.trajectory import StateTrajectory

D = 3
LENGTHS = [6, 4, 4, 1]  # longest first, as pyroseq's samplers give a batch
T = 6


def _mask(lengths: list[int]) -> torch.Tensor:
    return torch.arange(T) < torch.tensor(lengths).unsqueeze(-1)  # (B, T)


class _RowLaw(torch.nn.Module):
    """``h_t ~ N(tanh(A h_{t-1} + c_b), s^2)`` with a context ``c_b`` per row: a law that reads inputs of its
    own per row, as the future-conditioned guide does."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(D, D).double()
        self.context = torch.nn.Parameter(torch.randn(rows, D, dtype=torch.double))
        self.log_scale = torch.nn.Parameter(torch.full((D,), -0.5, dtype=torch.double))

    def __call__(self, h_prev: torch.Tensor, steps: int | slice | torch.Tensor) -> _Step:
        if isinstance(steps, int):  # the first rows at one step
            context = self.context[: h_prev.shape[-2]]
        elif isinstance(steps, slice):  # every step of every row
            context = self.context.unsqueeze(-2)
        else:  # the flat positions b * T + t of the real steps
            context = self.context[steps // T]
        loc = torch.tanh(self.linear(h_prev) + context)
        return _Step(loc, self.log_scale.exp().expand(loc.shape))


class _Step(dist.Independent):
    """A diagonal Normal that draws from given noise, as the guide's step law does."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(dist.Normal(loc, scale), 1)

    def reparameterize(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base_dist.loc + self.base_dist.scale * noise, self.base_dist.scale.log().sum(-1)


def _draw(law, mask: torch.Tensor, *, running_rows: bool, particles: int = 2, params=None):
    """A trajectory drawn under seed 0 with particles, its log-density, and the gradient of their sum with
    respect to ``params`` (the law's parameters by default)."""
    params = list(law.parameters()) if params is None else params
    for p in params:
        p.grad = None
    initial = torch.zeros(particles, mask.shape[0], D, dtype=torch.double)
    trajectory = StateTrajectory(law, initial, mask, running_rows=running_rows)
    torch.manual_seed(0)
    value = trajectory.rsample()  # (particles, B, T, D)
    log_prob = trajectory.log_prob(value)  # (particles, B)
    (value.sum() + log_prob.sum()).backward()
    return value.detach(), log_prob.detach(), [p.grad.clone() for p in params], trajectory


def test_running_rows_draw_and_score_what_stepping_every_row_does():
    """Stepping only the rows still running gives the trajectory, its log-density and every gradient that
    stepping every row gives, and the rows that have ended hold the same noise."""
    torch.manual_seed(1)
    law, mask = _RowLaw(len(LENGTHS)), _mask(LENGTHS)
    value, log_prob, grads, trajectory = _draw(law, mask, running_rows=True)
    assert trajectory._running(mask.expand(2, *mask.shape)) == [4, 3, 3, 3, 1, 1]  # the path under test
    value_all, log_prob_all, grads_all, _ = _draw(law, mask, running_rows=False)
    torch.testing.assert_close(value, value_all, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_prob, log_prob_all, atol=1e-12, rtol=0)
    for a, b in zip(grads, grads_all, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    # the log-density summed while drawing is the one of scoring the values anew (in one call)
    torch.testing.assert_close(log_prob, trajectory.log_prob(value.clone()), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "lengths, why", [([4, 6, 4, 1], "not longest first"), ([6, 4, 4, 1], "a hole in a row's mask")]
)
def test_rows_that_are_not_running_prefixes_are_all_stepped(lengths, why):
    """Where the rows do not run longest first, or a mask is not a prefix of Trues, every row is stepped,
    exactly as without ``running_rows``."""
    torch.manual_seed(2)
    law, mask = _RowLaw(len(lengths)), _mask(lengths)
    if why == "a hole in a row's mask":
        mask[0, 2] = False
    value, log_prob, _, trajectory = _draw(law, mask, running_rows=True)
    assert trajectory._running(mask) is None
    value_all, log_prob_all, _, _ = _draw(law, mask, running_rows=False)
    assert torch.equal(value, value_all) and torch.equal(log_prob, log_prob_all)


def test_only_a_law_that_opts_in_is_called_on_fewer_rows():
    """Without ``running_rows`` a law is always called on the whole batch (it may not take fewer rows)."""
    seen = []

    def law(h_prev, steps):
        seen.append(h_prev.shape[-2])
        return dist.Normal(h_prev, 1.0).to_event(1)

    StateTrajectory(law, torch.zeros(len(LENGTHS), D), _mask(LENGTHS)).rsample()
    assert set(seen) == {len(LENGTHS)}
    seen.clear()
    StateTrajectory(law, torch.zeros(len(LENGTHS), D), _mask(LENGTHS), running_rows=True).rsample()
    assert seen == [4, 3, 3, 3, 1, 1]


def test_a_trace_steps_every_row():
    """Under ``torch.jit.trace`` the running counts of the traced batch would be fixed into the graph."""
    law = _RowLaw(len(LENGTHS))
    trajectory = StateTrajectory(law, torch.zeros(len(LENGTHS), D), _mask(LENGTHS), running_rows=True)
    counts = []
    record = lambda x: counts.append(trajectory._running(_mask(LENGTHS))) or x  # noqa: E731
    torch.jit.trace(record, torch.zeros(1), check_trace=False)
    assert counts == [None]


def test_a_law_drawn_by_its_rsample_scores_its_running_rows_draw_as_any_trajectory():
    """A law without ``reparameterize`` draws its own normals (as many as the rows it is called on): its
    draw differs from stepping every row, but the log-density summed while drawing is the one of scoring
    the values anew, and the rows that have ended hold the trajectory's noise as before."""
    torch.manual_seed(3)
    law, mask = _RowLaw(len(LENGTHS)), _mask(LENGTHS)

    def plain(h_prev, steps):
        step = law(h_prev, steps)
        return dist.Normal(step.base_dist.loc, step.base_dist.scale).to_event(1)

    value, log_prob, _, trajectory = _draw(plain, mask, running_rows=True, params=list(law.parameters()))
    torch.testing.assert_close(log_prob, trajectory.log_prob(value.clone()), atol=1e-12, rtol=0)
    value_all, _, _, _ = _draw(plain, mask, running_rows=False, params=list(law.parameters()))
    ended = ~mask.expand(2, *mask.shape)
    assert torch.equal(value[ended], value_all[ended])


@pytest.mark.parametrize(
    "lengths, hole",
    [([6, 4, 4, 1], False), ([4, 6, 1, 4], False), ([6, 4, 4, 1], True), ([0, 0, 0, 0], False)],
)
def test_scoring_calls_the_law_on_the_real_steps_only_and_gives_what_every_step_gives(lengths, hole):
    """``log_prob`` of a trajectory it did not draw calls a law that opts in on the real steps alone (any
    order of rows, holes too); the log-density and its gradients (the law's, the states', ``h_0``'s) are
    those of calling it on every step."""
    torch.manual_seed(4)
    law, mask = _RowLaw(len(lengths)), _mask(lengths)
    if hole:
        mask[0, 2] = False
    value = torch.randn(2, len(lengths), T, D, dtype=torch.double, requires_grad=True)
    initial = torch.randn(2, len(lengths), D, dtype=torch.double, requires_grad=True)
    called = []

    def spy(h_prev, steps):
        called.append(steps)
        return law(h_prev, steps)

    def score(real_steps: bool) -> list[torch.Tensor]:
        for p in (*law.parameters(), value, initial):
            p.grad = None
        log_prob = StateTrajectory(spy, initial, mask, real_steps=real_steps).log_prob(value)  # (2, B)
        log_prob.sum().backward()
        wrt = (value, initial, *law.parameters())  # with no real step h_0 and the law get no gradient
        return [log_prob.detach()] + [torch.zeros_like(p) if p.grad is None else p.grad for p in wrt]

    packed = score(True)
    if any(lengths):
        assert torch.equal(called[-1], mask.flatten().nonzero().squeeze(-1))  # b * T + t of each real step
    else:
        assert called == []  # no real step: N(0, I) scores every state
    every = score(False)  # a law that does not opt in is scored on every step
    assert called[-1] == slice(None)
    for a, b in zip(packed, every, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_masks_that_differ_across_particles_or_a_trace_score_every_step():
    """A mask that is not the same in every leading batch dim, or a trace, scores through every step."""
    law = _RowLaw(len(LENGTHS))
    mask = _mask(LENGTHS).expand(2, -1, -1).clone()
    mask[1, 0, 5] = False
    value = torch.randn(2, len(LENGTHS), T, D, dtype=torch.double)
    trajectory = StateTrajectory(
        law, torch.zeros(2, len(LENGTHS), D, dtype=torch.double), mask, real_steps=True
    )
    assert trajectory._real_positions(value) is None
    alike = StateTrajectory(law, torch.zeros(len(LENGTHS), D), _mask(LENGTHS), real_steps=True)
    assert alike._real_positions(value) is not None
    # running rows alone do not opt in: such a law may not take positions
    rows = StateTrajectory(law, torch.zeros(len(LENGTHS), D), _mask(LENGTHS), running_rows=True)
    assert rows._real_positions(value) is None
    found = []
    record = lambda x: found.append(alike._real_positions(value)) or x  # noqa: E731
    torch.jit.trace(record, torch.zeros(1), check_trace=False)
    assert found == [None]


def test_scoring_the_real_steps_promotes_and_broadcasts_as_every_step_does():
    """A law whose log-density is of a wider dtype than the states, or a trajectory with no batch dims, is
    scored as scoring every step scores it."""
    weight = torch.full((2,), 0.5, dtype=torch.double)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    value = torch.randn(2, 3, 2)

    def law(h_prev, steps):
        return dist.Normal(weight * h_prev, 1.0).to_event(1)  # float64 on float32 states

    real = StateTrajectory(law, torch.zeros(2, 2), mask, real_steps=True).log_prob(value)
    every = StateTrajectory(law, torch.zeros(2, 2), mask).log_prob(value)
    assert real.dtype == every.dtype == torch.double
    torch.testing.assert_close(real, every)
    one = StateTrajectory(law, torch.zeros(2), mask[:1], real_steps=True).log_prob(value[0])  # no batch dims
    torch.testing.assert_close(one, StateTrajectory(law, torch.zeros(2), mask[:1]).log_prob(value[0]))
