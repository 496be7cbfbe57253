"""A distribution over whole state trajectories ``h_{1:T}``: sampled step by step, scored in one call.

The DSSM's model and guide both put their states in one sample site ``"h"`` of event shape ``(T, D)``
whose law is a Markov chain,

    h_t ~ p_t(h_t | h_{t-1})      on real steps (mask True)
    h_t ~ N(0, I_D)               after the sequence's end (mask False)

so ``log p(h_{1:T}) = sum_t [m_t log p_t(h_t | h_{t-1}) + (1 - m_t) log N(h_t; 0, I)]``. Drawing needs
``h_{t-1}`` before ``h_t`` (a loop over t); scoring a given trajectory does not: every ``h_{t-1}`` is known,
so one call of the step law on all T steps at once scores it (Pyro's ``pyro.distributions.hmm``
distributions work the same way). The states after the end affect nothing the model observes, so they
integrate out of ``p(w)``; because the model puts them under a fixed law instead of masking them, a guide
that does not know the mask (an autoguide) pays for their entropy and every objective stays a valid bound,
while a guide that draws them from the same ``N(0, I)`` (as :class:`~pyroseq.guides.FutureGuide` does)
pays nothing there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

__all__ = ["StateTrajectory", "standard_normal_log_prob", "shift_states", "tracing", "real_step_positions"]

StepLaw = Callable[[Tensor, int | slice | Tensor], TorchDistribution]
"""``step_law(h_prev, steps)``: the law of ``h_t`` given ``h_{t-1}``, event shape ``(D,)``.

``steps`` is a 0-based step index with ``h_prev (..., D)``, or ``slice(None)`` with ``h_prev (..., T, D)``
holding every ``h_{t-1}`` of the trajectory (batch shape then ends in ``T``). A law of a trajectory with
``running_rows=True`` also takes the first ``n`` rows at an int step (``h_prev (..., n, D)``), and one with
``real_steps=True`` a long tensor ``(N,)`` of real steps, each ``b * T + t`` (row b, step t), with
``h_prev (..., N, D)``."""


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """``log N(x; 0, I_D)`` summed over the last dim, ``(...,)``."""
    return -0.5 * (x.square().sum(-1) + x.shape[-1] * math.log(2 * math.pi))


def shift_states(initial: Tensor, states: Tensor) -> Tensor:
    """``h_{t-1}`` for every t: ``[h_0, h_1, ..., h_{T-1}]``, ``(..., T, D)``, from ``h_0 (..., D)``."""
    initial = initial.expand(states.shape[:-2] + initial.shape[-1:])
    return torch.cat([initial.unsqueeze(-2), states[..., :-1, :]], dim=-2)  # (..., T, D)


def tracing() -> bool:
    """Whether torch traces a graph (``torch.jit.trace``) or compiles one (``torch.compile``), which would fix
    a batch's lengths into it."""
    compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return torch.jit.is_tracing() or (compiling is not None and compiling())


def real_step_positions(mask: Tensor) -> Tensor | None:
    """The flat positions ``b * T + t`` of a ``(B, T)`` mask's real steps, ``(N,)``, where work can be done
    at those alone: on the CPU and not tracing (a GPU would wait for the count, a trace would fix it), else
    None."""
    if mask.device.type != "cpu" or tracing():
        return None
    return mask.flatten().nonzero().squeeze(-1)


def _draw(law: TorchDistribution, noise: Tensor) -> tuple[Tensor, Tensor, bool]:
    """``(h_t, term, reparameterized)``: a step law's draw with ``noise`` where it has ``reparameterize``
    (``term = log_det``, ``log q(h_t) = log N(noise) - log_det``), else its ``rsample`` (``term = log q``)."""
    if hasattr(law, "reparameterize"):
        h_t, log_det = law.reparameterize(noise)
        return h_t, log_det, True
    h_t = law.rsample()
    return h_t, law.log_prob(h_t), False


class StateTrajectory(TorchDistribution):
    """The law of a state trajectory ``h_{1:T}`` of a Markov chain, as one site of event shape ``(T, D)``.

    Sampling runs ``step_law`` once per step; :meth:`log_prob` of a trajectory it drew returns the
    log-density summed while drawing, and of any other trajectory calls ``step_law`` once on all steps
    (``steps=slice(None)``). See the module docstring for the law after a sequence's end. A step law that
    has ``reparameterize(noise) -> (h_t, log_det)``, ``h_t`` a bijection of ``noise ~ N(0, I)`` with
    ``log q(h_t) = log N(noise; 0, I) - log_det``, is drawn with the trajectory's own noise (one draw for all
    steps); any other is drawn with its ``rsample`` and scored with its ``log_prob``.

    With ``running_rows=True`` the step law also accepts the first ``n`` rows of the batch at an int step
    (``h_prev (..., n, D)``; a law that reads inputs of its own per row takes their first ``n``). Drawing on
    the CPU then steps only the sequences still running, where the rows run longest first (as pyroseq's
    samplers give them): on a batch that is half padding the loop does about half the arithmetic. A law with
    ``reparameterize`` draws the same trajectory either way, up to the rounding of a matrix product over
    fewer rows; one drawn by its ``rsample`` draws normals for the rows it is called on, so its draw differs
    (from the same law).

    With ``real_steps=True`` the step law also accepts the real steps of the batch as flat positions (see
    :data:`StepLaw`; a law that reads inputs of its own per step takes them at those positions), and
    :meth:`log_prob` of a trajectory it did not draw (the model scoring the guide's) calls it on the real
    steps alone, on the CPU, for any mask alike in every leading batch dim; the log-density is the same.

    Args:
        step_law: ``step_law(h_prev, steps)``, see :data:`StepLaw`.
        initial: ``h_0``, ``(*batch, D)``: it fixes the batch shape.
        mask: ``(*batch, T)`` bool (broadcastable), True on real steps; each row a prefix of Trues.
        running_rows: whether ``step_law`` accepts the first rows of the batch only (above).
        real_steps: whether ``step_law`` accepts flat positions of the real steps (above).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(
        self,
        step_law: StepLaw,
        initial: Tensor,
        mask: Tensor,
        *,
        running_rows: bool = False,
        real_steps: bool = False,
        validate_args=None,
    ) -> None:
        self.step_law = step_law
        self.initial = initial  # (*batch, D)
        self.steps_mask = mask  # (*batch, T)
        self.running_rows = running_rows
        self.real_steps = real_steps
        self._drawn: tuple[Tensor, Tensor] | None = None  # (a trajectory drawn here, its log-density)
        batch_shape, D = initial.shape[:-1], initial.shape[-1]
        super().__init__(batch_shape, torch.Size((mask.shape[-1], D)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> StateTrajectory:
        batch_shape = torch.Size(batch_shape)
        T = self.event_shape[0]
        return StateTrajectory(
            self.step_law,
            self.initial.expand(batch_shape + self.initial.shape[-1:]),
            self.steps_mask.expand(batch_shape + (T,)),
            running_rows=self.running_rows,
            real_steps=self.real_steps,
        )

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        T, D = self.event_shape
        h = self.initial.expand(shape + (D,))  # (*shape, D)
        mask = self.steps_mask.expand(shape + (T,))
        # One N(0, I) draw per step, time first so that the first steps' draws do not depend on T: the
        # state after the end, and the noise of laws that draw by reparameterize(noise).
        noise = torch.randn((T,) + shape + (D,), dtype=h.dtype, device=h.device)  # (T, *shape, D)
        running = self._running(mask)
        states, terms = [], []
        reparameterized = False
        for t in range(T):
            if running is None:  # every row, the ended ones given their noise afterwards
                law = self.step_law(h, t)
                h_t, term, reparameterized = _draw(law, noise[t])
                h = torch.where(mask[..., t].unsqueeze(-1), h_t, noise[t])  # (*shape, D)
            elif running[t]:  # the first n rows run, the rest have ended: their state is their noise
                n = running[t]
                law = self.step_law(h[..., :n, :], t)
                h_t, term, reparameterized = _draw(law, noise[t][..., :n, :])
                h = torch.cat([h_t, noise[t][..., n:, :]], dim=-2)  # (*shape, D)
                term = torch.cat([term, term.new_zeros(term.shape[:-1] + (shape[-1] - n,))], dim=-1)
            else:
                h, term = noise[t], noise.new_zeros(shape)
            states.append(h)
            terms.append(term)  # scored by the noise's law after the end (below)
        value = torch.stack(states, dim=-2)  # (*shape, T, D)
        noise_log_prob = standard_normal_log_prob(noise).movedim(0, -1)  # (*shape, T)
        terms = torch.stack(terms, dim=-1)  # (*shape, T)
        real = noise_log_prob - terms if reparameterized else terms
        self._drawn = (value, torch.where(mask, real, noise_log_prob).sum(-1))
        return value

    def _running(self, mask: Tensor) -> list[int] | None:
        """The number of rows running at each step where only those can be stepped (``running_rows``, on
        the CPU, the rows longest first and alike in every leading batch dim), else None."""
        if not (self.running_rows and mask.dim() >= 2 and mask.device.type == "cpu"):
            return None
        if tracing():  # a trace would fix this batch's counts
            return None
        rows = mask.reshape(-1, *mask.shape[-2:])  # (N, B, T)
        lengths = rows[0].sum(-1)  # (B,)
        prefix = torch.arange(mask.shape[-1], device=mask.device) < lengths.unsqueeze(-1)  # (B, T)
        if not (bool((lengths[:-1] >= lengths[1:]).all()) and bool((rows == prefix).all())):
            return None
        return (lengths.unsqueeze(0) > torch.arange(mask.shape[-1]).unsqueeze(-1)).sum(-1).tolist()

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._drawn is not None and value is self._drawn[0]:
            return self._drawn[1]
        previous = shift_states(self.initial, value)  # (..., T, D)
        positions = self._real_positions(value)
        if positions is None:  # every step, the ones after the end scored by N(0, I) afterwards
            log_p = self.step_law(previous, slice(None)).log_prob(value)  # (..., T)
            return torch.where(self.steps_mask, log_p, standard_normal_log_prob(value)).sum(-1)  # (...,)
        # the law on the real steps only, put in place of N(0, I)'s terms there
        noise = standard_normal_log_prob(value).flatten(-2)  # (..., B T)
        if positions.numel() == 0:  # no real step: the law is not needed
            return noise.view(value.shape[:-1]).sum(-1)
        law = self.step_law(previous.flatten(-3, -2)[..., positions, :], positions)
        real = law.log_prob(value.flatten(-3, -2)[..., positions, :])  # (..., N)
        # broadcast and promote as torch.where would
        batch, dtype = (
            torch.broadcast_shapes(noise.shape[:-1], real.shape[:-1]),
            torch.promote_types(noise.dtype, real.dtype),
        )
        noise = noise.to(dtype).expand(*batch, noise.shape[-1])  # (..., B T)
        log_p = noise.index_copy(-1, positions, real.to(dtype).expand(*batch, real.shape[-1]))
        return log_p.view(*batch, *value.shape[-3:-1]).sum(-1)  # (..., B)

    def _real_positions(self, value: Tensor) -> Tensor | None:
        """The flat positions ``b * T + t`` of the real steps, ``(N,)``, where the step law can be called on
        them alone (``real_steps``, on the CPU, a mask alike in every leading batch dim), else None."""
        mask = self.steps_mask
        if not (self.real_steps and mask.dim() >= 2 and value.dim() >= 3):
            return None
        rows = mask.reshape(-1, *mask.shape[-2:])  # (N, B, T)
        if value.shape[-3] != rows.shape[-2] or not bool((rows == rows[0]).all()):
            return None
        return real_step_positions(rows[0])  # (N,)
