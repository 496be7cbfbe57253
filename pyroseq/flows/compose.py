"""Composition of conditional transition flows: ``f = f_K o ... o f_1``, every part seeing the same context.

The deep state-space model paper (Schmidt & Hofmann, NeurIPS 2018) composes its flow families (e.g. a
triangular shift/scale followed by coupling layers) and finds that the richer generative flow helps.
"""

from __future__ import annotations

from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor, nn
from torch.distributions import ComposeTransform, IndependentTransform, Transform

from pyroseq.errors import ConfigError

__all__ = ["ConditionalCompose", "compose"]


def _on_vectors(transform: Transform) -> Transform:
    """``transform`` acting on whole vectors (event_dim 1), so that its log-det has shape ``x.shape[:-1]``."""
    if transform.domain.event_dim == 0:
        return IndependentTransform(transform, 1, cache_size=1)
    return transform


class ConditionalCompose(ConditionalTransformModule):
    r"""A conditional flow made of conditional flows applied in turn, all conditioned on the same ``c``.

    .. math::

        h = f_K(\cdots f_1(\xi; c) \cdots; c), \qquad
        \log\lvert\det J\rvert = \textstyle\sum_k \log\lvert\det J_{f_k}\rvert,
        \qquad \xi = f_1^{-1}(\cdots f_K^{-1}(h; c) \cdots; c).

    ``.condition(c)`` returns ``ComposeTransform([f.condition(c) for f in parts])`` with ``cache_size=1``.
    Parts that act element-wise (``event_dim`` 0, e.g. Pyro's ``conditional_spline``) are lifted to act on
    vectors, so the composition always has ``event_dim`` 1 and a log-det of shape ``x.shape[:-1]``; a
    composition of one part is how such a part is made a vector flow. The parts are registered
    submodules (``parts.0``, ``parts.1``, ...), so their parameters train and are saved.

    Args:
        parts: the conditional flows, in the order they act on ``xi``; at least one, each a
            :class:`~pyro.distributions.conditional.ConditionalTransformModule` on ``(..., D)``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, parts: list[ConditionalTransformModule]) -> None:
        super().__init__()
        if not parts:
            raise ConfigError("a composed flow needs at least one part, got none")
        for part in parts:
            if not isinstance(part, ConditionalTransformModule):
                raise ConfigError(
                    "compose() takes conditional flows (ConditionalTransformModule), "
                    f"got {type(part).__name__}"
                )
        self.parts = nn.ModuleList(parts)

    def condition(self, context: Tensor) -> ComposeTransform:
        return ComposeTransform([_on_vectors(part.condition(context)) for part in self.parts], cache_size=1)


def compose(*flows: ConditionalTransformModule) -> ConditionalCompose:
    """The conditional flow ``flows[-1] o ... o flows[0]``: ``flows[0]`` acts on the noise first."""
    return ConditionalCompose(list(flows))
