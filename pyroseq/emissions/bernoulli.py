"""The Bernoulli emission: a multi-hot vector per step (a piano roll's frame: 88 keys),
``p(x_t | h_t) = prod_k Bernoulli(x_{t,k}; sigmoid(g(h_t))_k)``."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor

from pyroseq.checks import check_positive_sizes
from pyroseq.emissions.base import Emission, check_vectors, emitter_network

__all__ = ["BernoulliEmission"]


class BernoulliEmission(Emission):
    """Independent Bernoulli units given the state: ``x_{t,k} ~ Bernoulli(sigmoid(g(h_t))_k)``, k = 1..F.

    The emission of Krishnan et al.'s Deep Markov Model on polyphonic music (Pyro's ``examples/dmm.py``).

    Args:
        state_dim: D, the dimension of the state.
        obs_dim: F, the length of each frame (88 for a piano roll).
        hidden: hidden width of the emitter MLP ``D -> hidden -> F``; ``None`` for a linear ``D -> F``.
        layers: the MLP's hidden layers (:func:`~pyroseq.emissions.base.emitter_network`).
        activation: the nonlinearity after each hidden layer, ``"tanh"`` or ``"relu"``.

    Example:
        >>> import torch
        >>> emission = BernoulliEmission(state_dim=4, obs_dim=88, hidden=16)
        >>> law = emission.distribution(torch.randn(2, 5, 4))  # (B, T, D)
        >>> law.batch_shape, law.event_shape, law.sample().shape
        (torch.Size([2, 5]), torch.Size([88]), torch.Size([2, 5, 88]))

    References:
        R. G. Krishnan, U. Shalit and D. Sontag. Structured Inference Networks for Nonlinear State Space
        Models. AAAI 2017.
    """

    observations = "vectors"

    def __init__(
        self,
        *,
        state_dim: int,
        obs_dim: int,
        hidden: int | None = 64,
        layers: int = 1,
        activation: str = "tanh",
    ) -> None:
        check_positive_sizes(state_dim=state_dim, obs_dim=obs_dim)
        super().__init__()
        self.obs_dim = obs_dim
        self.net = emitter_network(state_dim, obs_dim, hidden, layers=layers, activation=activation)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)  # (..., F) logits

    def law(self, params: Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=params).to_event(1)

    def features(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)  # (..., F): each key's probability

    def check_observations(
        self, obs: Tensor | None, mask: Tensor, *, who: str
    ) -> tuple[Tensor | None, Tensor]:
        return check_vectors(obs, mask, obs_dim=self.obs_dim, who=who, binary=True)
