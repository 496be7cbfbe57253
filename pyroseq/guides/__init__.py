"""Guides (variational posteriors over the states) for the state-space models.

``GUIDES`` maps a name to a guide class; :func:`make_guide` builds one by name. Every guide takes the
model's arguments ``(ids, mask)`` and declares the model's latent sites ``h_{t}``.
"""

from __future__ import annotations

from typing import Any

from pyro.nn import PyroModule

from pyroseq.errors import ConfigError
from pyroseq.guides.future import FutureGuide, GaussianGuide

__all__ = ["FutureGuide", "GaussianGuide", "GUIDES", "make_guide"]

GUIDES: dict[str, type[PyroModule]] = {
    "future": FutureGuide,
    "gaussian": GaussianGuide,
}


def make_guide(name: str, **kwargs: Any) -> PyroModule:
    """The guide registered as ``name``, built with keyword arguments ``kwargs``.

    Raises:
        ConfigError: ``name`` is not in :data:`GUIDES`.
    """
    try:
        cls = GUIDES[name]
    except KeyError:
        raise ConfigError(f"unknown guide {name!r}; valid names: {', '.join(sorted(GUIDES))}") from None
    return cls(**kwargs)
