"""The sequence plate that every model and guide declares, and the batch shape it gives their sites."""

from __future__ import annotations

import torch
from pyro.poutine.runtime import get_plates

__all__ = ["plate_batch_shape"]


def plate_batch_shape() -> torch.Size:
    """The batch shape that the enclosing vectorised plates broadcast a sample site to.

    ``(B,)`` inside ``pyro.plate("seqs", B, dim=-1)``; ``(K, B)`` when vectorised particles add a plate
    of size K at dim -2. Expanding the initial state to this shape keeps every later tensor at the full
    batch shape, so that a flow never has to broadcast its context against its input.
    """
    frames = [f for f in get_plates() if f.vectorized]
    if not frames:
        return torch.Size()
    shape = [1] * -min(f.dim for f in frames)
    for f in frames:
        shape[f.dim] = f.size
    return torch.Size(shape)
