"""The deep state-space model (DSSM) of Schmidt & Hofmann (2018) as a Pyro model.

The state moves by a conditional normalising flow of white noise and never sees the observations:

    h_0   learned parameter
    xi_t  ~ N(0, I_D)
    h_t   = f_G(xi_t; h_{t-1})                    f_G: a bijection in xi, conditioned on h_{t-1}
    w_t   ~ p(w_t | h_t)                          an emission family (see :mod:`pyroseq.emissions`):
                                                  Categorical(softmax(g(h_t))) for symbols, independent
                                                  Bernoulli units for piano-roll frames, a diagonal Normal

so that

    p(h_t | h_{t-1}) = N(f_G^{-1}(h_t; h_{t-1}); 0, I) |det d f_G^{-1} / d h_t|.

Training is amortised variational inference with a guide over the states (see :mod:`pyroseq.guides`);
the model scores every state the guide proposes through ``f_G^{-1}``, so ``f_G`` must have an inverse.

References:
    F. Schmidt and T. Hofmann. Deep State Space Models for Unconditional Word Generation.
    NeurIPS 2018. arXiv:1806.04550.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor, nn

from pyroseq.checks import check_positive_sizes
from pyroseq.emissions import CategoricalEmission, Emission, emission_size, make_emission
from pyroseq.errors import ConfigError
from pyroseq.flows import resolve_flow
from pyroseq.flows.trajectory import StateTrajectory, real_step_positions
from pyroseq.models.base import StateSpaceModel
from pyroseq.plates import plate_batch_shape

__all__ = ["DSSM"]


def _pushforward_of_noise(flow: ConditionalTransformModule, h_prev: Tensor) -> TorchDistribution:
    """The law of ``f(xi; h_prev)``, ``xi ~ N(0, I_D)``: batch shape ``h_prev.shape[:-1]``, event ``(D,)``."""
    noise = dist.Normal(h_prev.new_zeros(()), 1.0).expand(h_prev.shape).to_event(1)  # (..., D)
    # .condition() makes a fresh transform, so its one-entry cache holds this step's sample only.
    return dist.TransformedDistribution(noise, [flow.condition(h_prev)])


class _Emissions:
    """``p(w_t | h_t)`` of every step, with the observations' log-probabilities computed in one call.

    Args:
        emitter: the emission family.
        states: ``(..., B, T, D)``, the states ``h_t``.
        observed: ``(B, T)`` symbol ids or ``(B, T, F)`` frames, or ``None``.
        real: the flat positions ``b * T + t`` of the real steps, ``(N,)``: the observations are scored at
            those alone (the others are masked), and a step's parameters are computed when it asks for them;
            ``None``: every step's parameters are computed at once.
    """

    def __init__(
        self, emitter: Emission, states: Tensor, observed: Tensor | None, real: Tensor | None
    ) -> None:
        self.emitter, self.states, self.observed, self.real = emitter, states, observed, real
        self.params = None if real is not None else emitter(states)  # (..., B, T, P)
        self._log_probs: Tensor | None = None

    def at(self, step: int) -> Tensor:
        """The emission law's parameters at one step, ``(..., B, P)``."""
        if self.params is not None:
            return self.params[..., step, :]
        return self.emitter(self.states[..., step, :])

    def observed_log_probs(self) -> Tensor:
        """``log p(w_t | h_t)`` at the observations, ``(..., B, T)`` (0 after a sequence's end when scored at
        the real steps alone)."""
        if self._log_probs is None:
            if self.params is not None:
                self._log_probs = self.emitter.log_prob(self.params, self.observed)
            else:
                states = self.states.flatten(-3, -2)[..., self.real, :]  # (..., N, D)
                observed = self.observed.flatten(0, 1)[self.real]  # (N[, F])
                real = self.emitter.log_prob(self.emitter(states), observed)  # (..., N)
                B, T = self.states.shape[-3:-1]
                zeros = real.new_zeros(real.shape[:-1] + (B * T,))
                self._log_probs = zeros.index_copy(-1, self.real, real).view(real.shape[:-1] + (B, T))
        return self._log_probs


class _StepEmission(TorchDistribution):
    """``p(w_t | h_t)`` of one step; batch shape ``(..., B)``, the emission's event shape.

    Scoring the observations reads the one call over all steps of :class:`_Emissions`; any other value
    (a draw, a replayed value) is scored by the emission's own law at this step.
    """

    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, emissions: _Emissions, step: int, observed: Tensor | None) -> None:
        self.emissions, self.step, self.observed = emissions, step, observed
        self._params: Tensor | None = None  # (..., B, P), computed when a law is asked for
        batch_shape = emissions.states.shape[:-2]  # (..., B)
        super().__init__(batch_shape, emissions.emitter.event_shape, validate_args=False)

    @property
    def params(self) -> Tensor:
        if self._params is None:
            self._params = self.emissions.at(self.step)
        return self._params

    def _law(self) -> TorchDistribution:
        return self.emissions.emitter.law(self.params)

    @property
    def support(self):
        return self._law().support

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self._law().sample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self.observed is not None and value is self.observed:
            return self.emissions.observed_log_probs()[..., self.step]  # (..., B)
        return self._law().log_prob(value)


class DSSM(StateSpaceModel):
    """Deep state-space model: a white-noise state transition through a conditional flow.

    ``forward(ids, mask)`` is the Pyro model; ``ids`` are symbol ids ``(B, T)`` for the categorical
    emission, or frames ``(B, T, F)`` for an emission of vectors (``bernoulli``, ``normal``). Inside
    ``pyro.plate("seqs", B, dim=-1)`` it has

    * one latent site ``"h"``: the whole state trajectory, value ``(B, T, D)`` (``(K, B, T, D)`` under K
      vectorised particles), batch shape ``(B,)``, event shape ``(T, D)``, a
      :class:`~pyroseq.flows.trajectory.StateTrajectory` with, on real steps,

          p(h_t | h_{t-1}) = N(f_G^{-1}(h_t; h_{t-1}); 0, I) |det d f_G^{-1} / d h_t|

      and ``h_t ~ N(0, I)`` at padded steps (no mask: those states integrate out of ``p(w)``, so any guide
      gives a valid bound). It is drawn step by step and scored in one call over all T steps;
    * for t = 1..T an observed site ``w_{t}`` with the emission ``p(w_t | h_t)`` (by default
      ``Categorical(softmax(g(h_t)))``), masked by ``mask[:, t-1]``, so that padded steps emit nothing.

    A guide declares the same site ``"h"`` with a value of shape ``(..., B, T, D)``.

    Args:
        vocab_size: V, the number of symbols including PAD, BOS and EOS (the categorical emission only).
        state_dim: D, the dimension of the state (and of the noise).
        flow: the transition flow f_G, a name of :func:`pyroseq.flows.make_flow` or any
            :class:`~pyro.distributions.conditional.ConditionalTransformModule` mapping ``(D,)`` to ``(D,)``
            with a ``(D,)`` context; it must have an inverse. The default is two coupling blocks (four affine
            couplings) followed by Krishnan's gated transition, whose gated linear path keeps ``h_{t-1}``.
        flow_hidden: hidden width of a named flow's networks.
        emitter_hidden: hidden width of the emitter MLP ``D -> emitter_hidden (-> emitter_hidden ...) -> V``;
            ``None`` for a linear emitter ``D -> V``.
        emitter_layers: the emitter MLP's hidden layers, each of ``emitter_hidden`` units (Pyro's DMM example:
            2).
        emitter_activation: the nonlinearity after each hidden layer, ``"tanh"`` or ``"relu"`` (Pyro's DMM
            example).
        emission: the emission family, a name of :data:`pyroseq.emissions.EMISSIONS`: ``"categorical"``
            (symbols), ``"bernoulli"`` (multi-hot frames), ``"normal"`` or ``"normal_state"`` (real vectors).
        obs_dim: F, the length of each observed vector (the emissions of vectors only).
        name: the prefix of its parameters in Pyro's param store; ``None``: ``model``, ``model_2``, ... in
            order of construction (see :mod:`pyroseq.module`). Pass it where parameters are saved and loaded.

    Example:
        A DSSM of 88-key piano-roll frames:

        >>> model = DSSM(emission="bernoulli", obs_dim=88, state_dim=8, flow="diagonal")
        >>> frames, mask = torch.zeros(2, 5, 88), torch.ones(2, 5, dtype=torch.bool)
        >>> trace = pyro.poutine.trace(model).get_trace(frames, mask)
        >>> states, first_frame = trace.nodes["h"], trace.nodes["w_1"]
        >>> states["value"].shape, first_frame["fn"].event_shape
        (torch.Size([2, 5, 8]), torch.Size([88]))
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        state_dim: int = 16,
        flow: str | ConditionalTransformModule = "coupling+coupling+gated",
        flow_hidden: int = 64,
        emitter_hidden: int | None = 64,
        emitter_layers: int = 1,
        emitter_activation: str = "tanh",
        emission: str = "categorical",
        obs_dim: int | None = None,
        name: str | None = None,
    ) -> None:
        obs_dim = emission_size(emission, vocab_size=vocab_size, obs_dim=obs_dim)
        check_positive_sizes(state_dim=state_dim, flow_hidden=flow_hidden, emitter_hidden=emitter_hidden)
        super().__init__(vocab_size=vocab_size, name=name)
        self.emission = emission
        self.state_dim = state_dim
        self.emitter_layers, self.emitter_activation = emitter_layers, emitter_activation
        self.h_0 = nn.Parameter(torch.zeros(state_dim))
        self.transition_flow = resolve_flow(
            flow,
            input_dim=state_dim,
            context_dim=state_dim,
            flow_hidden=flow_hidden,
            need_inverse=True,
            role="transition flow",
        )
        self.emitter = make_emission(
            emission,
            state_dim=state_dim,
            obs_dim=obs_dim,
            hidden=emitter_hidden,
            layers=emitter_layers,
            activation=emitter_activation,
        )

    @property
    def obs_dim(self) -> int:
        """V symbols, or F, the length of each observed vector."""
        return self.emitter.obs_dim

    def checked_inputs(self, ids: Tensor | None, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        """Symbol ids ``(B, T)`` or frames ``(B, T, F)``, as the emission takes them, and the mask checked."""
        return self.emitter.check_observations(ids, mask, who=type(self).__name__)

    def initial_state(self, batch_shape: torch.Size | tuple[int, ...]) -> Tensor:
        """``h_0`` expanded to ``batch_shape + (D,)``."""
        return self.h_0.expand(*batch_shape, self.state_dim)

    def transition(self, h_prev: Tensor) -> TorchDistribution:
        """``p(h_t | h_{t-1})``: the push-forward of N(0, I_D) through ``f_G(. ; h_{t-1})``.

        Args:
            h_prev: ``(..., D)``.

        Returns:
            a distribution with batch shape ``h_prev.shape[:-1]`` and event shape ``(D,)``.
        """
        return _pushforward_of_noise(self.transition_flow, h_prev)

    def emission_logits(self, h: Tensor) -> Tensor:
        """Logits of ``p(w_t | h_t)``, ``(..., V)``, with PAD and BOS at ``-inf`` (categorical emission)."""
        if not isinstance(self.emitter, CategoricalEmission):
            raise ConfigError(
                f"this DSSM emits {self.emission} vectors, not symbols: it has no symbol logits (use "
                "model.emitter.distribution(h) for p(x_t | h_t))"
            )
        return self.emitter.logits(self.emitter(h))  # (..., V)

    def emission_log_prob(self, h: Tensor, obs: Tensor) -> Tensor:
        """``log p(x_t | h_t)`` by the model's emission family: symbol ids ``(...)`` or frames ``(..., F)``
        at states ``h (..., D)``."""
        return self.emitter.log_prob(self.emitter(h), obs)

    def forward(self, ids: Tensor | None, mask: Tensor) -> None:
        """The Pyro model over a padded batch.

        Args:
            ids: ``(B, T)`` long symbol ids (or ``(B, T, F)`` frames for an emission of vectors), or ``None``
                to draw them (generation, ``Predictive``).
            mask: ``(B, T)`` bool, True on real steps.
        """
        B, T = mask.shape
        # Each attribute access of a plain nn.Module is a pyro.module statement: fetch them once per run.
        flow, emitter = self.transition_flow, self.emitter
        with pyro.plate("seqs", B, dim=-1):
            h_0 = self.initial_state(plate_batch_shape())  # (B, D), or (K, B, D) under vectorised particles
            law = StateTrajectory(
                lambda h_prev, steps: _pushforward_of_noise(flow, h_prev),
                h_0,
                mask,
                running_rows=True,
                real_steps=True,
            )
            h = pyro.sample("h", law)  # (..., B, T, D)
            if h.shape[-2:] != (T, self.state_dim):
                raise ConfigError(
                    f"the guide's site 'h' has shape {tuple(h.shape)}, but the model's states are "
                    f"(..., B, T, D) = (..., {B}, {T}, {self.state_dim}): give the guide "
                    f"state_dim={self.state_dim} and the model's observations and mask"
                )
            # observed on the CPU: scored at the real steps alone (the others are masked)
            emissions = _Emissions(emitter, h, ids, None if ids is None else real_step_positions(mask))
            for t in range(1, T + 1):
                observed = None if ids is None else ids[:, t - 1]  # (B,)
                law = _StepEmission(emissions, t - 1, observed)
                pyro.sample(f"w_{t}", law.mask(mask[:, t - 1]), obs=observed)
