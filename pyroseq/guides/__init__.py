"""Guides (variational posteriors over the states) for the sequence models.

``GUIDES`` maps a name to a guide factory; :func:`build_guide` builds one by name (which is how a
checkpoint rebuilds it). Every guide takes the model's arguments ``(ids, mask)`` and declares the model's
latent site ``h`` (the state trajectory); :func:`empty_guide` declares none, for models without latent sites.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyroseq.errors import ConfigError
from pyroseq.guides.elman import LengthAwareRNN
from pyroseq.guides.empty import empty_guide
from pyroseq.guides.future import RNN_CELLS, FutureGuide, GaussianGuide

__all__ = [
    "FutureGuide",
    "GaussianGuide",
    "LengthAwareRNN",
    "empty_guide",
    "GUIDES",
    "RNN_CELLS",
    "build_guide",
]

GUIDES: dict[str, Callable[..., Callable[..., Any]]] = {
    "empty": lambda: empty_guide,
    "future": FutureGuide,
    "gaussian": GaussianGuide,
}
"""Name -> factory of every named guide; add an entry to make a new guide nameable."""


def build_guide(name: str, **kwargs: Any) -> Callable[..., Any]:
    """The guide registered as ``name`` (a key of :data:`GUIDES`), built with keyword arguments ``kwargs``.

    Raises:
        ConfigError: ``name`` is not in :data:`GUIDES`.
    """
    try:
        factory = GUIDES[name]
    except KeyError:
        raise ConfigError(f"unknown guide {name!r}; valid names: {', '.join(sorted(GUIDES))}") from None
    return factory(**kwargs)
