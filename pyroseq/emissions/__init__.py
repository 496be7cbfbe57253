"""Emission families ``p(x_t | h_t)``, one per module, and a name -> factory registry.

* ``categorical``: one symbol per step (words, text), PAD and BOS masked;
* ``bernoulli``: a multi-hot vector per step (a piano roll's frame);
* ``normal``: a real vector per step, diagonal, one learned scale per dimension; ``normal_state``: the
  scale a function of the state too.

Each family is an :class:`Emission`: ``emission(h)`` gives the law's parameters at states ``h (..., D)``,
``emission.law(params)`` the distribution of one step's observation, ``emission.features(params)`` that
law as features (its parameters in their own range). Build one by name with :func:`make_emission`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from pyroseq.checks import check_positive_sizes, check_vocab_size
from pyroseq.emissions.base import (
    EMITTER_ACTIVATIONS,
    EMITTER_DEFAULTS,
    Emission,
    check_vectors,
    emitter_network,
)
from pyroseq.emissions.bernoulli import BernoulliEmission
from pyroseq.emissions.categorical import CategoricalEmission, mask_special_logits
from pyroseq.emissions.normal import NormalEmission
from pyroseq.errors import ConfigError

__all__ = [
    "EMISSIONS",
    "make_emission",
    "emission_size",
    "Emission",
    "emitter_network",
    "EMITTER_ACTIVATIONS",
    "check_vectors",
    "CategoricalEmission",
    "mask_special_logits",
    "BernoulliEmission",
    "NormalEmission",
]

EMISSIONS: dict[str, Callable[..., Emission]] = {
    "categorical": CategoricalEmission,
    "bernoulli": BernoulliEmission,
    "normal": partial(NormalEmission, scale="learned"),
    "normal_state": partial(NormalEmission, scale="state"),
}
"""Name -> factory ``(*, state_dim, obs_dim, hidden)`` of every emission family, which also takes ``layers``
and ``activation`` to be built with an emitter of another depth or nonlinearity; add an entry to make a new
family nameable."""


def make_emission(
    name: str,
    *,
    state_dim: int,
    obs_dim: int,
    hidden: int | None = 64,
    layers: int = 1,
    activation: str = "tanh",
) -> Emission:
    """The emission family called ``name`` (a key of :data:`EMISSIONS`).

    Args:
        name: ``"categorical"``, ``"bernoulli"``, ``"normal"`` or ``"normal_state"``.
        state_dim: D, the dimension of the state.
        obs_dim: V symbols (categorical) or F, the length of each observed vector.
        hidden: hidden width of the emitter MLP; ``None`` for a linear emitter.
        layers: the MLP's hidden layers, each of ``hidden`` units.
        activation: the nonlinearity after each hidden layer, a key of
            :data:`~pyroseq.emissions.base.EMITTER_ACTIVATIONS` (``"tanh"``, ``"relu"``).

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), or a size that is not positive.

    Example:
        >>> emission = make_emission("bernoulli", state_dim=8, obs_dim=88)
        >>> emission.observations, tuple(emission.event_shape)
        ('vectors', (88,))
    """
    if name not in EMISSIONS:
        raise ConfigError(f"unknown emission {name!r}; valid names: {', '.join(EMISSIONS)}")
    # A family registered before emitters had depth and a nonlinearity takes neither: pass them where set.
    network = {k: v for k, v in (("layers", layers), ("activation", activation)) if v != EMITTER_DEFAULTS[k]}
    return EMISSIONS[name](state_dim=state_dim, obs_dim=obs_dim, hidden=hidden, **network)


def emission_size(name: str, *, vocab_size: int | None, obs_dim: int | None) -> int:
    """The ``obs_dim`` of the emission family called ``name``, from a model's arguments: ``vocab_size`` for
    symbols (``obs_dim`` absent or equal), ``obs_dim`` for vectors (``vocab_size`` absent).

    Raises:
        ConfigError: an unknown name, the wrong one of the two sizes (or neither), or a size that is not
            valid.

    Example:
        >>> emission_size("bernoulli", vocab_size=None, obs_dim=88)
        88
    """
    if name not in EMISSIONS:
        raise ConfigError(f"unknown emission {name!r}; valid names: {', '.join(EMISSIONS)}")
    if name == "categorical":
        if vocab_size is not None:
            check_vocab_size(vocab_size)
        if vocab_size is None or obs_dim not in (None, vocab_size):
            raise ConfigError(
                f"the categorical emission needs vocab_size (the number of symbols), got vocab_size="
                f"{vocab_size!r}, obs_dim={obs_dim!r}"
            )
        return vocab_size
    if obs_dim is None or vocab_size is not None:
        raise ConfigError(
            f"the {name} emission needs obs_dim (the length of each observed vector) and no vocab_size, "
            f"got vocab_size={vocab_size!r}, obs_dim={obs_dim!r}"
        )
    check_positive_sizes(obs_dim=obs_dim)
    return obs_dim
