"""Padded batches of symbol sequences, with masks and lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError

__all__ = [
    "SequenceBatch",
    "Batch",
    "pad_batch",
    "first_eos",
    "longest_first",
    "MAX_SEED",
    "check_seed",
    "seeded_generator",
]

# torch seeds are 64-bit; runs also seed with seed + 1 and seed + 2, so these stay below 2**64.
MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> None:
    """Raise :class:`ConfigError` unless ``seed`` is an integer in ``[0, MAX_SEED]``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}", params=("seed",))


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (checked by :func:`check_seed`)."""
    check_seed(seed)
    return torch.Generator().manual_seed(seed)


@runtime_checkable
class SequenceBatch(Protocol):
    """What training and evaluation read of a minibatch, whatever a step observes: a padded batch of
    symbols (:class:`Batch`) or of frames (:class:`~pyroseq.data.polyphonic.FrameBatch`).

    Attributes:
        observations: what the model is called with: ``(B, T)`` symbol ids, or ``(B, T, F)`` frames.
        mask: ``(B, T)`` bool; True on real steps.
        lengths: ``(B,)`` long; number of real steps per sequence.
    """

    mask: Tensor
    lengths: Tensor

    @property
    def observations(self) -> Tensor: ...

    def to(self, device: torch.device | str) -> SequenceBatch: ...

    def __len__(self) -> int: ...


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
    def observations(self) -> Tensor:
        """The symbol ids, what a model of symbols is called with (see :class:`SequenceBatch`)."""
        return self.ids

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def first_eos(ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """The step of each row's first EOS, ``ids.shape[:-1]``: the symbols before it, the word's length;
    ``T`` (the row's full length) where a row has none. With ``mask``, a step outside it ends the row too.

    The one place where a sequence is cut at its first EOS: keep ``ids[..., : first_eos(ids) + 1]``.

    Examples:
        >>> first_eos(torch.tensor([[3, 2, 4, 2], [3, 4, 5, 6]]))  # EOS is id 2
        tensor([1, 4])
    """
    ended = ids == Vocabulary.eos_id
    if mask is not None:
        ended = ended | ~mask
    T = ids.shape[-1]
    return torch.where(ended, torch.arange(T, device=ids.device), T).min(dim=-1).values


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

    Examples:
        >>> batch = pad_batch([[3, 2], [4, 5, 2]])
        >>> batch.ids
        tensor([[3, 2, 0],
                [4, 5, 2]])
        >>> batch.mask
        tensor([[ True,  True, False],
                [ True,  True,  True]])
        >>> batch.lengths, batch.num_tokens
        (tensor([2, 3]), 5)
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


def longest_first(indices: Tensor, lengths: Tensor) -> Tensor:
    """``indices`` reordered so that their sequences run longest first (ties in the given order).

    A training batch's rows in this order cost the same loss (it sums over rows) and let the guide step only
    the sequences still running (:class:`~pyroseq.flows.trajectory.StateTrajectory`).

    Args:
        indices: ``(B,)`` indices of a batch's sequences.
        lengths: ``(N,)`` the length of every sequence ``indices`` may name.

    Example:
        >>> longest_first(torch.tensor([0, 1, 2, 3]), torch.tensor([2, 5, 2, 7]))
        tensor([3, 1, 0, 2])
    """
    return indices[torch.argsort(lengths[indices], descending=True, stable=True)]


class SeededSampler:
    """Base of the endless minibatch streams: a seeded generator whose state travels with checkpoints.

    A resumed run restores :meth:`state_dict` and so draws the same batches as an uninterrupted one.
    Subclasses implement ``__next__`` and draw with :attr:`generator`.
    """

    def __init__(self, batch_size: int, *, seed: int = 0, device: torch.device | str | None = None) -> None:
        if batch_size <= 0:
            raise DataError(f"batch size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.device = device
        self.generator = seeded_generator(seed)

    def __iter__(self) -> SeededSampler:
        return self

    def __next__(self) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    def _placed(self, batch: Batch) -> Batch:
        return batch.to(self.device) if self.device is not None else batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
