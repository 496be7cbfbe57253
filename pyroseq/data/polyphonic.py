"""Polyphonic music as binary piano rolls: the Boulanger-Lewandowski pickles (JSB chorales, Nottingham,
MuseData, Piano-midi.de), with their published train/valid/test splits.

Each file is a pickled dict ``{"train": [...], "valid": [...], "test": [...]}``; a sequence is a list of
frames and a frame the tuple of MIDI pitches sounding at that step (an empty tuple is a rest). A frame becomes
a row of an 88-key binary roll: pitch ``p`` sets column ``p - 21`` (A0 = 21 to C8 = 108), as Pyro's
``pyro.contrib.examples.polyphonic_data_loader`` does for its Deep Markov Model example.

Nothing is downloaded. The JSB chorales are ``polyphonic/jsb_chorales.pickle`` in Pyro's public datasets
repository (``https://github.com/pyro-ppl/datasets``), the file that Pyro's loader fetches; the other three
come from the same place (``nottingham.pickle``, ``muse_data.pickle``, ``piano_midi.pickle``).

A pickle runs whatever its file says, so this loader unpickles with a restricted ``find_class`` that
resolves only the two globals these files reference: numpy's scalar reconstructor
(``numpy.core.multiarray.scalar``) and ``numpy.dtype``. Any other global (``os.system``, ``builtins.eval``,
...) is refused before it is looked up, so a tampered file cannot run code.

References:
    N. Boulanger-Lewandowski, Y. Bengio and P. Vincent. Modeling Temporal Dependencies in High-Dimensional
    Sequences: Application to Polyphonic Music Generation and Transcription. ICML 2012.
"""

from __future__ import annotations

import hashlib
import io
import numbers
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pyroseq.data.batch import SeededSampler, longest_first
from pyroseq.errors import DataError

__all__ = [
    "LOWEST_PITCH",
    "HIGHEST_PITCH",
    "NUM_KEYS",
    "SPLITS",
    "FrameBatch",
    "pad_frames",
    "PolyphonicSplit",
    "PolyphonicCorpus",
    "FrameSampler",
    "load_polyphonic",
    "read_polyphonic_pickle",
    "roll_pitches",
]

LOWEST_PITCH = 21  # A0, the piano's lowest key
HIGHEST_PITCH = 108  # C8, its highest
NUM_KEYS = HIGHEST_PITCH - LOWEST_PITCH + 1  # 88
SPLITS = ("train", "valid", "test")
_MAX_PICKLE_BYTES = 2**30  # the four published files are 2-26 MB

# The only globals the published pickles reference (numpy scalars: a dtype and the scalar's raw bytes).
# numpy >= 2 names its core ``numpy._core`` (and still resolves ``numpy.core.multiarray.scalar`` for old
# pickles, without a warning); files written by either numpy are accepted.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves numpy's scalar and dtype reconstruction and refuses every other global."""

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataError(
                f"{self.path} refers to the Python object {module}.{name}, which a polyphonic pickle never "
                "needs (only numpy scalars and dtypes); refusing to load it, since unpickling it could run "
                "code: use the published file (see pyroseq.data.polyphonic)"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: object) -> object:
        raise DataError(f"{self.path} refers to a persistent object, which a polyphonic pickle never has")


def read_polyphonic_pickle(path: str | Path) -> object:
    """The raw contents of a polyphonic pickle, unpickled with only numpy's scalar and dtype allowed.

    Raises:
        DataError: a missing or unreadable file, a file that is not a pickle, or one that references any
            other global (refused before anything is run).
    """
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[bytes, object]:
    """The bytes of the file at ``path``, and its contents unpickled by :func:`read_polyphonic_pickle`."""
    if not path.is_file():
        raise DataError(f"{'not a file' if path.exists() else 'file not found'}: {path}")
    if path.stat().st_size > _MAX_PICKLE_BYTES:
        raise DataError(f"{path} has {path.stat().st_size} bytes, more than a polyphonic pickle's 1 GiB")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data, _NumpyOnlyUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as e:  # a truncated or foreign file raises many types
        raise DataError(
            f"{path} is not a readable pickle ({type(e).__name__}: {e})".splitlines()[0]
        ) from None


def _is_pitch(value: object) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _roll(sequence: object, *, where: str) -> Tensor:
    """One sequence (a list of frames, each a tuple of MIDI pitches) as a binary roll ``(T, 88)``."""
    if not isinstance(sequence, (list, tuple)):
        raise DataError(f"{where} is a {type(sequence).__name__}, not a list of frames")
    if len(sequence) == 0:
        raise DataError(f"{where} is empty (no frames): every sequence needs at least one frame")
    roll = np.zeros((len(sequence), NUM_KEYS), dtype=np.float32)
    for t, frame in enumerate(sequence):
        if not isinstance(frame, (list, tuple)):
            raise DataError(f"{where}, frame {t}: a {type(frame).__name__}, not a tuple of MIDI pitches")
        for pitch in frame:
            if not _is_pitch(pitch):
                raise DataError(f"{where}, frame {t}: pitch {pitch!r} is not an integer MIDI pitch")
            if not LOWEST_PITCH <= pitch <= HIGHEST_PITCH:
                raise DataError(
                    f"{where}, frame {t}: pitch {int(pitch)} is outside the piano's "
                    f"{LOWEST_PITCH}-{HIGHEST_PITCH} (A0-C8)"
                )
            roll[t, int(pitch) - LOWEST_PITCH] = 1.0
    return torch.from_numpy(roll)


def roll_pitches(roll: Tensor) -> list[list[int]]:
    """The MIDI pitches sounding in each frame of a roll ``(T, 88)`` (the inverse of the loader's map:
    column c is pitch c + 21); a frame with none is a rest, ``[]``.

    Example:
        >>> roll = torch.zeros(2, NUM_KEYS)
        >>> roll[0, [39, 43, 46]] = 1  # C4 E4 G4
        >>> roll_pitches(roll)
        [[60, 64, 67], []]
    """
    if roll.dim() != 2 or roll.shape[-1] != NUM_KEYS:
        raise DataError(f"a piano roll is (T, {NUM_KEYS}), got {tuple(roll.shape)}")
    return [[int(c) + LOWEST_PITCH for c in frame.nonzero().flatten()] for frame in roll > 0.5]


@dataclass(frozen=True)
class FrameBatch:
    """A minibatch of piano rolls, right-padded with silent frames.

    Attributes:
        frames: ``(B, T, 88)`` float 0/1; zeros after each sequence's end.
        mask: ``(B, T)`` bool; True on real frames.
        lengths: ``(B,)`` long; number of real frames per sequence.
    """

    frames: Tensor
    mask: Tensor
    lengths: Tensor

    def to(self, device: torch.device | str) -> FrameBatch:
        return FrameBatch(self.frames.to(device), self.mask.to(device), self.lengths.to(device))

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def observations(self) -> Tensor:
        """The frames: what a model of frames is called with (a ``SequenceBatch``'s observations)."""
        return self.frames

    @property
    def num_frames(self) -> int:
        """The number of real frames, the divisor of a per-step NLL."""
        return int(self.lengths.sum())


def pad_frames(
    rolls: Sequence[Tensor], *, max_length: int | None = None, device: torch.device | str | None = None
) -> FrameBatch:
    """Stack rolls ``(T_i, F)`` into a padded :class:`FrameBatch`.

    Args:
        rolls: B non-empty rolls with the same number of columns F.
        max_length: pad to this T (default the longest roll); a longer roll raises :class:`DataError`.
        device: where the tensors live.

    Examples:
        >>> batch = pad_frames([torch.ones(2, 88), torch.ones(3, 88)])
        >>> batch.frames.shape, batch.lengths, batch.num_frames
        (torch.Size([2, 3, 88]), tensor([2, 3]), 5)
    """
    if len(rolls) == 0:
        raise DataError("cannot make a batch of no sequences")
    lengths = torch.tensor([len(r) for r in rolls], dtype=torch.long)
    if int(lengths.min()) == 0:
        raise DataError(f"cannot make a batch with an empty sequence (sequence {int(lengths.argmin())})")
    T = int(lengths.max()) if max_length is None else max_length
    if int(lengths.max()) > T:
        raise DataError(f"a sequence has {int(lengths.max())} frames, more than max_length={T}")
    frames = torch.zeros(len(rolls), T, rolls[0].shape[-1])  # (B, T, F)
    for i, roll in enumerate(rolls):
        frames[i, : len(roll)] = roll
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
    batch = FrameBatch(frames, mask, lengths)
    return batch if device is None else batch.to(device)


@dataclass
class PolyphonicSplit:
    """One split of a polyphonic corpus: its sequences as binary rolls.

    Attributes:
        name: ``"train"``, ``"valid"`` or ``"test"``.
        rolls: one ``(T_i, 88)`` float 0/1 roll per sequence.
    """

    name: str
    rolls: list[Tensor]

    def __len__(self) -> int:
        return len(self.rolls)

    @property
    def lengths(self) -> Tensor:
        """Frames per sequence, ``(N,)`` long."""
        return torch.tensor([len(r) for r in self.rolls], dtype=torch.long)

    @property
    def max_length(self) -> int:
        """The longest sequence in frames: the T every batch of this split is padded to."""
        return int(self.lengths.max())

    def batch(
        self,
        indices: Sequence[int] | Tensor | None = None,
        *,
        device: torch.device | str | None = None,
        pad_to: str = "split",
    ) -> FrameBatch:
        """The sequences at ``indices`` (default all) as one batch padded to :attr:`max_length` (``pad_to=
        "split"``: every batch of the split has one shape, as a JIT-compiled loss needs) or to the batch's
        own longest sequence (``pad_to="batch"``: no step is computed only to be masked)."""
        if pad_to not in ("split", "batch"):
            raise DataError(f"pad_to is 'split' or 'batch', got {pad_to!r}")
        rolls = self.rolls if indices is None else [self.rolls[int(i)] for i in indices]
        return pad_frames(rolls, max_length=self.max_length if pad_to == "split" else None, device=device)

    def batches(self, batch_size: int, *, device: torch.device | str | None = None):
        """Every sequence once, in order, in batches of ``batch_size`` (the last may be smaller)."""
        if batch_size <= 0:
            raise DataError(f"batch size must be positive, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.batch(range(start, min(start + batch_size, len(self))), device=device)

    def sampler(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
        pad_to: str = "split",
    ) -> FrameSampler:
        """Minibatches of this split, each epoch in a new seeded order; see :class:`FrameSampler`."""
        return FrameSampler(self, batch_size, seed=seed, device=device, pad_to=pad_to)

    def stats(self) -> dict:
        """Sequences, frames, mean notes per frame, max polyphony, mean and max length."""
        roll = torch.cat(self.rolls)  # (frames, 88)
        notes = roll.sum(-1)  # (frames,)
        keys = roll.any(0).nonzero().flatten()
        return {
            "sequences": len(self),
            "frames": int(roll.shape[0]),
            "mean_notes_per_frame": round(float(notes.mean()), 6),
            "max_polyphony": int(notes.max()),
            "mean_length": round(float(self.lengths.double().mean()), 6),
            "max_length": self.max_length,
            "pitch_range": [int(keys.min()) + LOWEST_PITCH, int(keys.max()) + LOWEST_PITCH]
            if len(keys)
            else None,
        }


@dataclass
class PolyphonicCorpus:
    """A polyphonic corpus with its published splits.

    Attributes:
        source: the file it was read from.
        sha256: the file's SHA-256, so that a figure can name the exact data.
        train, valid, test: the splits.
    """

    source: str
    sha256: str
    train: PolyphonicSplit
    valid: PolyphonicSplit
    test: PolyphonicSplit

    # What a training run reads of any corpus: frames have no vocabulary, and loading drops nothing.
    vocab = None
    notes = ()

    def split(self, name: str) -> PolyphonicSplit:
        """The split called ``name`` (one of :data:`SPLITS`)."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def stats(self) -> dict:
        """Each split's statistics (see :meth:`PolyphonicSplit.stats`) as a JSON-serialisable dict."""
        return {
            "corpus": "polyphonic",
            "source": self.source,
            "sha256": self.sha256,
            "keys": NUM_KEYS,
            "splits": {name: self.split(name).stats() for name in SPLITS},
        }


class FrameSampler(SeededSampler):
    """An endless stream of minibatches of one split, reproducible from a seed and resumable.

    The sequences are visited in epochs, each in a new random order drawn from the seeded generator;
    a batch that reaches an epoch's end continues into the next one, so every batch has ``batch_size``
    sequences and the shape ``(batch_size, T, 88)``: T the split's longest sequence (``pad_to="split"``,
    one shape for a JIT-compiled loss), or the batch's own longest (``pad_to="batch"``, as Pyro's DMM
    example pads: on JSB a batch of 20 has about 100 frames where the split's longest has 129). A batch's rows
    run longest first (:func:`~pyroseq.data.batch.longest_first`).
    """

    def __init__(
        self,
        split: PolyphonicSplit,
        batch_size: int,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
        pad_to: str = "split",
    ) -> None:
        super().__init__(batch_size, seed=seed, device=device)
        if pad_to not in ("split", "batch"):
            raise DataError(f"pad_to is 'split' or 'batch', got {pad_to!r}")
        self.split = split
        self.pad_to = pad_to
        self._order = torch.empty(0, dtype=torch.long)  # the rest of the current epoch's order
        self._lengths = split.lengths  # (N,)

    def indices(self) -> Tensor:
        """Indices of the next batch's sequences, ``(B,)``."""
        while len(self._order) < self.batch_size:
            self._order = torch.cat([self._order, torch.randperm(len(self.split), generator=self.generator)])
        idx, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return idx

    def __next__(self) -> FrameBatch:
        batch = self.split.batch(longest_first(self.indices(), self._lengths), pad_to=self.pad_to)
        return batch if self.device is None else batch.to(self.device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "order": self._order.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._order = state["order"].clone()


def load_polyphonic(path: str | Path) -> PolyphonicCorpus:
    """Load a Boulanger-Lewandowski polyphonic pickle (JSB chorales, Nottingham, MuseData, Piano-midi.de).

    Nothing is downloaded: get the file from Pyro's datasets repository
    (``https://github.com/pyro-ppl/datasets``, ``polyphonic/jsb_chorales.pickle``: the file that
    ``pyro.contrib.examples.polyphonic_data_loader`` fetches).

    Args:
        path: the pickle: a dict with keys ``train``, ``valid`` and ``test``, each a list of sequences, each a
            list of frames, each a tuple of MIDI pitches in 21-108.

    Returns:
        the corpus, each sequence an 88-column binary roll (pitch p -> column p - 21).

    Raises:
        DataError: one line naming the file (and the split, sequence and frame where it applies): a pickle
            global other than numpy's scalar and dtype (refused, nothing run), another layout, an empty
            sequence, a pitch that is not an integer in 21-108.

    Examples:
        >>> corpus = load_polyphonic("jsb_chorales.pickle")  # doctest: +SKIP
        >>> batch = next(corpus.train.sampler(20, seed=0))  # doctest: +SKIP
        >>> batch.frames.shape, batch.mask.shape  # doctest: +SKIP
        (torch.Size([20, 129, 88]), torch.Size([20, 129]))
    """
    path = Path(path)
    raw, data = _read(path)
    if not isinstance(data, dict) or set(data) != set(SPLITS):
        found = (
            f"keys {', '.join(sorted(map(repr, data)))}"
            if isinstance(data, dict)
            else f"a {type(data).__name__}"
        )
        raise DataError(
            f"{path} is not a polyphonic pickle: expected a dict with keys 'train', 'valid' and 'test', "
            f"got {found}"
        )
    splits = {}
    for name in SPLITS:
        sequences = data[name]
        if not isinstance(sequences, list) or not sequences:
            what = "an empty list" if isinstance(sequences, list) else f"a {type(sequences).__name__}"
            raise DataError(f"{path}: the {name} split is {what}, not a non-empty list of sequences")
        rolls = [_roll(seq, where=f"{path}: {name} sequence {i}") for i, seq in enumerate(sequences)]
        splits[name] = PolyphonicSplit(name, rolls)
    return PolyphonicCorpus(str(path), hashlib.sha256(raw).hexdigest(), **splits)
