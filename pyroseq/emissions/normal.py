"""The diagonal Normal emission: a real vector per step, ``p(x_t | h_t) = N(mu(h_t), diag sigma^2)``, the
scale learned (one per dimension) or a function of the state."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyroseq.checks import check_positive_sizes
from pyroseq.emissions.base import Emission, check_vectors, emitter_network
from pyroseq.errors import ConfigError

__all__ = ["NormalEmission", "MIN_SCALE"]

MIN_SCALE = 1e-4  # added to a state-dependent scale, as the guide's combiner does


class NormalEmission(Emission):
    """``x_t ~ N(mu(h_t), diag sigma^2)``: ``mu = g(h_t)`` and either a learned ``sigma = exp(s)`` (``scale=
    "learned"``, one per dimension, starting at 1) or ``sigma = softplus(g'(h_t)) + 1e-4`` (``scale="state"``,
    the emitter's second half).

    Args:
        state_dim: D, the dimension of the state.
        obs_dim: F, the length of each observed vector.
        hidden: hidden width of the emitter MLP; ``None`` for a linear emitter.
        layers: the MLP's hidden layers (:func:`~pyroseq.emissions.base.emitter_network`).
        activation: the nonlinearity after each hidden layer, ``"tanh"`` or ``"relu"``.
        scale: ``"learned"`` or ``"state"``.

    Example:
        >>> emission = NormalEmission(state_dim=4, obs_dim=3, hidden=8, scale="state")
        >>> law = emission.distribution(torch.randn(2, 4))
        >>> law.batch_shape, law.event_shape
        (torch.Size([2]), torch.Size([3]))
    """

    observations = "vectors"

    def __init__(
        self,
        *,
        state_dim: int,
        obs_dim: int,
        hidden: int | None = 64,
        scale: str = "learned",
        layers: int = 1,
        activation: str = "tanh",
    ) -> None:
        if scale not in ("learned", "state"):
            raise ConfigError(f"the Normal emission's scale is 'learned' or 'state', got {scale!r}")
        check_positive_sizes(state_dim=state_dim, obs_dim=obs_dim)
        super().__init__()
        self.obs_dim = obs_dim
        self.scale = scale
        out_dim = obs_dim * (2 if scale == "state" else 1)
        self.net = emitter_network(state_dim, out_dim, hidden, layers=layers, activation=activation)
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(obs_dim))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)  # (..., F) loc, or (..., 2 F) loc and raw scale

    def law(self, params: Tensor) -> dist.TorchDistribution:
        if self.scale == "state":
            loc, raw = params.chunk(2, dim=-1)  # (..., F) each
            scale = nn.functional.softplus(raw) + MIN_SCALE
        else:
            loc, scale = params, self.log_scale.exp().expand(params.shape)
        return dist.Normal(loc, scale).to_event(1)

    def features(self, params: Tensor) -> Tensor:
        normal = self.law(params).base_dist
        return torch.cat([normal.loc, normal.scale], dim=-1)  # (..., 2 F)

    @property
    def feature_dim(self) -> int:
        return 2 * self.obs_dim  # the location and the scale

    def check_observations(
        self, obs: Tensor | None, mask: Tensor, *, who: str
    ) -> tuple[Tensor | None, Tensor]:
        return check_vectors(obs, mask, obs_dim=self.obs_dim, who=who)
