"""What the affine flow families share: log-scale clipping, near-identity initialisation, and the
context-to-parameters network ("hypernet") of a conditional flow."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.nn import ConditionalDenseNN, DenseNN

__all__ = ["LOG_SCALE_MIN_CLIP", "LOG_SCALE_MAX_CLIP", "INIT_GAIN", "near_identity_", "HypernetFlow"]

LOG_SCALE_MIN_CLIP = -5.0
LOG_SCALE_MAX_CLIP = 3.0
INIT_GAIN = 1e-2


def near_identity_(hypernet: ConditionalDenseNN | DenseNN, *, gain: float = INIT_GAIN) -> None:
    """Shrink a Pyro ``(Conditional)DenseNN``'s output layer in place, so that a flow starts near identity.

    The output layer's weights are multiplied by ``gain`` and its bias zeroed: shifts and log-scales then
    start at about ``0`` (scale about ``1``) yet still depend on their inputs, so that a gradient
    reaches every layer from the first step.
    """
    last = hypernet.layers[-1]
    with torch.no_grad():
        last.weight.mul_(gain)
        last.bias.zero_()


class HypernetFlow(ConditionalTransformModule):
    """A conditional flow on ``R^D`` whose parameters a network computes from the context.

    Args:
        hypernet: maps a context ``(..., C)`` to the flow's parameters ``(..., P)``.
        input_dim: ``D``, the size of ``xi`` and ``h``.
        log_scale_min_clip: lower bound on every log-scale (gradients pass through the clip).
        log_scale_max_clip: upper bound on every log-scale.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        hypernet: torch.nn.Module,
        *,
        input_dim: int,
        log_scale_min_clip: float = LOG_SCALE_MIN_CLIP,
        log_scale_max_clip: float = LOG_SCALE_MAX_CLIP,
    ) -> None:
        super().__init__()
        self.hypernet = hypernet
        self.input_dim = input_dim
        self.log_scale_min_clip = log_scale_min_clip
        self.log_scale_max_clip = log_scale_max_clip
