"""Checks of user-supplied sizes, shared by models, guides, estimators, decoders and training runs."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, ResourceError

__all__ = ["check_positive_sizes", "check_vocab_size", "available_memory", "check_memory", "format_bytes"]


def check_positive_sizes(**sizes: int | None) -> None:
    """Raise :class:`ConfigError` naming the first size that is not a positive integer (``None`` passes)."""
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_vocab_size(vocab_size: int) -> None:
    """Raise :class:`ConfigError` unless ``vocab_size`` leaves room for a symbol after the specials."""
    check_positive_sizes(vocab_size=vocab_size)
    if vocab_size <= len(Vocabulary.specials):
        raise ConfigError(
            f"vocab_size={vocab_size} leaves no symbols after the {len(Vocabulary.specials)} specials "
            "(PAD, BOS, EOS); pass len(vocabulary)"
        )


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup (v2) memory limit, or None where there is no limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that an allocation on ``device`` can still get, or None where it cannot be told.

    CUDA: the free memory of the device. CPU: ``MemAvailable`` of ``/proc/meminfo`` (memory that can be
    had without swapping), capped by the cgroup limit of a container; elsewhere the free physical pages.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    room = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if room is None:
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_room()
    return room if cgroup is None else min(room, cgroup)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(needed: float, *, what: str, fix: str, device: torch.device | str = "cpu") -> None:
    """Raise :class:`ResourceError` when ``needed`` bytes (an estimate made before allocating) exceed
    what ``device`` has available; the message gives both figures, ``what`` needs them and the ``fix``."""
    room = available_memory(device)
    if room is not None and needed > room:
        raise ResourceError(
            f"{what} needs about {format_bytes(needed)} of memory, but {torch.device(device)} has "
            f"{format_bytes(room)} available: {fix}"
        )
