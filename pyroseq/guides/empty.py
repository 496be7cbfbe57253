"""The guide of a model without latent sites (the teacher-forced RNNs)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["empty_guide"]


def empty_guide(ids: Tensor | None, mask: Tensor) -> None:
    """The guide of a model without latent sites: ``Trace_ELBO`` is then the exact negative log-likelihood."""
