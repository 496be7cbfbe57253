"""What every emission family shares: the module contract, the emitter network, and the checks of observed
vectors.

An emission is ``p(x_t | h_t)``, the law of one step's observation given the state. Each family is a small
module in two layers, as the flows are: ``emission(h)`` is a network of the state, the law's parameters
``(..., P)`` (one tensor, so a model can compute every step's at once and slice a step out);
``emission.law(params)`` is the distribution they describe, with batch shape ``params.shape[:-1]``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor, nn

from pyroseq.checks import check_inputs, check_positive_sizes
from pyroseq.errors import ConfigError, DataError

__all__ = ["Emission", "EMITTER_ACTIVATIONS", "EMITTER_DEFAULTS", "emitter_network", "check_vectors"]


EMITTER_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
"""The emitter's hidden nonlinearity by name: tanh (pyroseq's default), relu (the emitter of Pyro's Deep
Markov Model example)."""

EMITTER_DEFAULTS = {"layers": 1, "activation": "tanh"}
"""The emitter network's depth and nonlinearity unless given: one tanh hidden layer."""


def emitter_network(
    state_dim: int, out_dim: int, hidden: int | None, *, layers: int = 1, activation: str = "tanh"
) -> nn.Module:
    """The emitter ``g``: linear ``D -> out_dim`` when ``hidden`` is ``None``, else an MLP of ``layers``
    hidden layers of ``hidden`` units with ``activation`` after each, ``D -> hidden (-> hidden ...) ->
    out_dim``.

    Example:
        >>> emitter_network(4, 88, 100, layers=2, activation="relu")  # Pyro's DMM example's emitter
        Sequential(
          (0): Linear(in_features=4, out_features=100, bias=True)
          (1): ReLU()
          (2): Linear(in_features=100, out_features=100, bias=True)
          (3): ReLU()
          (4): Linear(in_features=100, out_features=88, bias=True)
        )
    """
    check_positive_sizes(state_dim=state_dim, out_dim=out_dim, emitter_hidden=hidden, emitter_layers=layers)
    if activation not in EMITTER_ACTIVATIONS:
        raise ConfigError(
            f"unknown emitter_activation {activation!r}: use one of {', '.join(EMITTER_ACTIVATIONS)}",
            params=("emitter_activation",),
        )
    if hidden is None:
        if {"layers": layers, "activation": activation} != EMITTER_DEFAULTS:
            raise ConfigError(
                "a linear emitter (no hidden layer) has no layers or activation to set: give emitter_hidden "
                "a width, or leave emitter_layers=1 and emitter_activation='tanh' (got "
                f"{layers}, {activation!r})",
                params=("emitter_hidden", "emitter_layers", "emitter_activation"),
            )
        return nn.Linear(state_dim, out_dim)
    body: list[nn.Module] = []
    for width_in in [state_dim] + [hidden] * (layers - 1):
        body += [nn.Linear(width_in, hidden), EMITTER_ACTIVATIONS[activation]()]
    return nn.Sequential(*body, nn.Linear(hidden, out_dim))


class Emission(nn.Module):
    """Base of the emission families: ``p(x_t | h_t)`` from a state ``h_t`` of dimension D.

    Subclasses set :attr:`observations` and :attr:`obs_dim` and implement :meth:`forward`, :meth:`law` and
    :meth:`features`.

    Attributes:
        observations: ``"symbols"`` (one id per step: a batch is ``ids (B, T)``) or ``"vectors"`` (one
            vector per step: ``frames (B, T, obs_dim)``).
        obs_dim: V, the number of symbols, or F, the length of each observed vector.
    """

    observations: ClassVar[str]
    obs_dim: int

    def forward(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The law's parameters ``(..., P)`` at states ``h (..., D)``."""
        raise NotImplementedError

    def law(self, params: Tensor) -> TorchDistribution:  # pragma: no cover - abstract
        """``p(x_t | h_t)`` given its parameters ``(..., P)``: batch shape ``params.shape[:-1]``, event shape
        :attr:`event_shape`."""
        raise NotImplementedError

    def features(self, params: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The law as features ``(..., feature_dim)``: its parameters in their own range (probabilities, a
        location and a scale), what a reader of the output distribution sees at a step (professor forcing's
        discriminator, :mod:`pyroseq.models.professor`)."""
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        """The length of :meth:`features`: :attr:`obs_dim` unless a family says otherwise."""
        return self.obs_dim

    @property
    def event_shape(self) -> torch.Size:
        """``()`` for a symbol, ``(obs_dim,)`` for a vector."""
        return torch.Size(() if self.observations == "symbols" else (self.obs_dim,))

    def distribution(self, h: Tensor) -> TorchDistribution:
        """``p(x_t | h_t)`` at states ``h (..., D)``: batch shape ``h.shape[:-1]``."""
        return self.law(self(h))

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """``log p(x | params)``, ``value`` broadcast against the batch shape ``params.shape[:-1]``."""
        return self.law(params).log_prob(value)

    def check_observations(
        self, obs: Tensor | None, mask: Tensor, *, who: str
    ) -> tuple[Tensor | None, Tensor]:
        """The observations and mask a model was called with, checked; :class:`DataError` naming the
        sequence and step of the first bad value."""
        raise NotImplementedError  # pragma: no cover - abstract


def check_vectors(
    obs: Tensor | None, mask: Tensor, *, obs_dim: int, who: str, binary: bool = False
) -> tuple[Tensor | None, Tensor]:
    """Observed vectors ``(B, T, obs_dim)`` and their mask ``(B, T)``, checked; returned as float and bool.

    The mask is checked as :func:`pyroseq.checks.check_inputs` checks it. The vectors must be finite
    everywhere (pad with zeros) and, when ``binary``, 0 or 1. Each failure is a one-line :class:`DataError`
    prefixed by ``who`` that names the sequence and the frame.
    """
    _, mask = check_inputs(None, mask, vocab_size=obs_dim, who=who)  # ids=None: the mask alone
    if obs is None:
        return None, mask
    wanted = f"frames (B, T, {obs_dim}) of {'0/1 values' if binary else 'real values'}"
    if not isinstance(obs, Tensor) or obs.dtype.is_complex:
        kind = obs.dtype if isinstance(obs, Tensor) else type(obs).__name__
        raise DataError(f"{who}: expected {wanted}, got {kind}")
    if obs.dim() == 2 and not obs.dtype.is_floating_point:
        raise DataError(
            f"{who}: got symbol ids of shape {tuple(obs.shape)}, but this model emits vectors: it takes "
            f"{wanted} (symbols need emission='categorical')"
        )
    if obs.dim() != 3 or obs.shape[:2] != mask.shape or obs.shape[2] != obs_dim:
        raise DataError(
            f"{who}: expected {wanted} matching the mask {tuple(mask.shape)}, got {tuple(obs.shape)}"
        )
    obs = obs if obs.dtype.is_floating_point else obs.to(torch.get_default_dtype())
    bad = ~torch.isfinite(obs)
    if binary:
        bad = bad | ((obs != 0) & (obs != 1))
    if bad.any():
        row, step, column = (int(i) for i in bad.nonzero()[0])
        need = "0 or 1" if binary else "finite"
        raise DataError(
            f"{who}: sequence {row}, frame {step}, column {column} is {float(obs[row, step, column])}, not "
            f"{need}" + ("" if bool(mask[row, step]) else " (a padded frame: pad with zeros)")
        )
    return obs, mask
