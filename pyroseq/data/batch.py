"""Padded batches of symbol sequences, with masks and lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pyroseq.errors import DataError

__all__ = ["Batch", "pad_batch"]


@dataclass(frozen=True)
class Batch:
    """A minibatch of sequences, right-padded.

    Attributes:
        ids: ``(B, T)`` long; PAD (0) after each sequence's end.
        mask: ``(B, T)`` bool; True on real steps (EOS included).
        lengths: ``(B,)`` long; number of real steps per sequence.
    """

    ids: Tensor
    mask: Tensor
    lengths: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.ids.to(device), self.mask.to(device), self.lengths.to(device))

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def pad_batch(
    sequences: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> Batch:
    """Stack id sequences into a padded :class:`Batch`.

    Args:
        sequences: B sequences of ids, each non-empty.
        pad_id: the id written after each sequence's end.
        max_length: pad to this T (a fixed T keeps JIT-compiled losses from recompiling);
            default the longest sequence. A longer sequence raises :class:`DataError`.
        device: where the tensors live.
    """
    if len(sequences) == 0:
        raise DataError("cannot make a batch of no sequences")
    lengths = [len(s) for s in sequences]
    if min(lengths) == 0:
        raise DataError("cannot make a batch with an empty sequence")
    T = max(lengths) if max_length is None else max_length
    if max(lengths) > T:
        raise DataError(f"a sequence has {max(lengths)} steps, more than max_length={T}")
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    length = torch.tensor(lengths, dtype=torch.long)
    mask = torch.arange(T)[None, :] < length[:, None]  # (B, T)
    return Batch(ids, mask, length).to(device) if device is not None else Batch(ids, mask, length)
