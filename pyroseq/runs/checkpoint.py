"""Checkpoints and run directories: written atomically, read without executing pickled code.

A run directory holds

* ``checkpoint.pt``: model, guide and optimiser state, the vocabulary, the config, the step and the
  random-number states, saved with ``torch.save`` and loaded with ``weights_only=True``;
* ``config.json``: the run's configuration, readable by people and tools;
* ``metrics.jsonl``: one JSON object per logged step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pyroseq.errors import CheckpointError, StorageError, first_line

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "save_checkpoint",
    "load_checkpoint",
    "write_json_atomic",
    "remove_stale_temporaries",
    "write_text_atomic",
]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
FORMAT_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which would race with other threads' writes.
_UMASK = _umask()


def _atomic_write(path: Path, write: Any) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over ``path``.

    A write that fails (a full disk, a lost permission) leaves ``path`` as it was and raises
    :class:`StorageError`.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except PermissionError:
        raise StorageError(f"cannot write {path}: permission denied; make {path.parent} writable") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode open() would have, as other files get.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write as a RuntimeError of its zip writer ("PytorchStreamWriter
        # failed writing file ...: file write failed").
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and "writ" in str(e).lower()):
            full = shutil.disk_usage(path.parent).free < _FULL
            reason, fix = (
                ("the disk is full", "free some space") if full else (first_line(e, limit=200), "fix that")
            )
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise StorageError(f"could not write {path} ({reason}); {kept}: {fix} and run again") from None
        raise


_FULL = 64 * 2**20  # a disk with less free space than this is taken as the reason a write failed


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporaries (``.checkpoint.pt.<random>``, ...) that writes killed mid-way (``kill -9``)
    left in ``run_dir``; returns them. Only for the process that holds the run's lock: a write under way
    has a temporary of the same form."""
    stale = [
        path
        for name in (CHECKPOINT, CONFIG, METRICS)
        for path in run_dir.glob(f".{name}.*")
        if path.is_file() and not path.is_symlink()
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    _atomic_write(Path(path), lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def write_text_atomic(path: str | Path, text: str) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts) atomically: a crash leaves the old file."""
    for name, value in state.get("model", {}).items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"refusing to save a checkpoint with non-finite parameter {name!r}")
    payload = {"format_version": FORMAT_VERSION, **state}
    _atomic_write(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (pyroseq train --out ...)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable pyroseq checkpoint ({first_line(e)})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pyroseq checkpoint of format {FORMAT_VERSION}")
    return state
