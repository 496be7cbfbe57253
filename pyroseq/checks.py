"""Checks of user-supplied sizes and inputs, shared by models, guides, estimators, decoders and training
runs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError, ResourceError

__all__ = [
    "check_clip_norm",
    "check_optimiser",
    "check_positive_sizes",
    "check_vocab_size",
    "check_inputs",
    "available_memory",
    "check_memory",
    "format_bytes",
]


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


def check_inputs(
    ids: Tensor | None, mask: Tensor, *, vocab_size: int, who: str
) -> tuple[Tensor | None, Tensor]:
    """The ``(ids, mask)`` a model or guide was called with, checked; returns them as long and bool.

    ``mask`` must be a ``(B, T)`` bool tensor with ``B, T >= 1`` (0/1 integers are accepted and converted)
    whose rows are prefixes of Trues (right padding); ``ids``, unless ``None``, integer symbol ids of the
    same shape, in ``[0, vocab_size)`` at every step (padded steps too: the models embed them) and neither
    PAD nor BOS on real steps. A padded row is a whole word and must end with EOS on its last real step
    (rows without padding may be running text or cut words). Each failure is a
    :class:`DataError` that names the problem, prefixed by ``who`` (the model's or guide's class).
    """
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise DataError(f"{who}: mask must be a (B, T) tensor, got {shape}")
    B, T = mask.shape
    if B == 0:
        raise DataError(f"{who}: the batch is empty (mask {tuple(mask.shape)}): pass at least one sequence")
    if T == 0:
        raise DataError(
            f"{who}: the sequences have no steps (mask {tuple(mask.shape)}): every word has at least its EOS"
        )
    if ids is not None:
        if (
            not isinstance(ids, Tensor)
            or ids.dtype.is_floating_point
            or ids.dtype.is_complex
            or ids.dtype == torch.bool
        ):
            kind = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
            raise DataError(f"{who}: ids must be an integer tensor of symbol ids, got {kind}")
        if ids.shape != mask.shape:
            raise DataError(
                f"{who}: ids {tuple(ids.shape)} and mask {tuple(mask.shape)} must have the same shape (B, T)"
            )
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise DataError(
                f"{who}: mask must be bool (True on real steps) or 0/1 integers, got {mask.dtype}; "
                "pass batch.mask or mask.bool()"
            )
        if ((mask != 0) & (mask != 1)).any():
            raise DataError(
                f"{who}: an integer mask must hold only 0 and 1, got values {mask.unique().tolist()}"
            )
        mask = mask.bool()
    if T > 1:
        holes = mask[:, 1:] & ~mask[:, :-1]  # (B, T-1): a real step right after a padded one
        if holes.any():
            row = int(holes.any(dim=1).nonzero()[0])
            raise DataError(
                f"{who}: mask row {row} ({''.join('1' if m else '0' for m in mask[row].tolist())}) is not a "
                "prefix of Trues: pad sequences on the right (pyroseq.data.pad_batch)"
            )
    if ids is None:
        return None, mask
    ids = ids.long()
    outside = (ids < 0) | (ids >= vocab_size)  # (B, T)
    if outside.any():
        row, step = (int(i) for i in outside.nonzero()[0])
        if not mask[row, step]:
            raise DataError(
                f"{who}: ids[{row}, {step}] = {int(ids[row, step])} on a padded step is not a symbol id "
                f"(a vocabulary of size {vocab_size}): pad with PAD = {Vocabulary.pad_id} "
                "as pyroseq.data.pad_batch does: the mask, not the id, marks a padded step"
            )
    bad = mask & (outside | (ids == Vocabulary.pad_id) | (ids == Vocabulary.bos_id))
    if bad.any():
        row, step = (int(i) for i in bad.nonzero()[0])
        raise DataError(
            f"{who}: ids[{row}, {step}] = {int(ids[row, step])} on a real step is not a symbol of a "
            f"vocabulary of size {vocab_size} (PAD={Vocabulary.pad_id} and BOS={Vocabulary.bos_id} never "
            "appear on real steps); encode with the model's vocabulary"
        )
    lengths = mask.sum(-1)  # (B,)
    if not mask.all():  # a padded row is a whole word (a full row may be running text or a cut word)
        last = ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)  # (B,)
        unended = (lengths > 0) & (lengths < T) & (last != Vocabulary.eos_id)
        if unended.any():
            row = int(unended.nonzero()[0])
            step = int(lengths[row]) - 1
            raise DataError(
                f"{who}: word {row} ends with ids[{row}, {step}] = {int(last[row])}, not EOS "
                f"({Vocabulary.eos_id}): end every word with EOS on its last real step "
                "(Vocabulary.encode adds it; pass add_eos=True to your own encoder)"
            )
    return ids, mask


def check_clip_norm(clip_norm: float) -> None:
    """Raise :class:`ConfigError` unless ``clip_norm`` is a finite number >= 0 (0: no clipping)."""
    number = isinstance(clip_norm, int | float) and not isinstance(clip_norm, bool)
    if not (number and clip_norm >= 0 and math.isfinite(clip_norm)):
        raise ConfigError(
            f"clip_norm must be a finite number >= 0 (0: no clipping), got {clip_norm}", params=("clip_norm",)
        )


def check_optimiser(*, weight_decay: float, betas: tuple[float, float]) -> None:
    """Raise :class:`ConfigError` unless ``weight_decay`` is a finite number >= 0 and ``betas`` two numbers
    in ``[0, 1)`` (Adam's decay rates of its moment estimates)."""
    number = isinstance(weight_decay, int | float) and not isinstance(weight_decay, bool)
    if not (number and weight_decay >= 0 and math.isfinite(weight_decay)):
        message = f"weight_decay must be a finite number >= 0 (0: none), got {weight_decay!r}"
        raise ConfigError(message, params=("weight_decay",))
    pair = isinstance(betas, tuple | list) and len(betas) == 2
    rates = pair and all(isinstance(b, int | float) and not isinstance(b, bool) for b in betas)
    if not (rates and all(0 <= b < 1 for b in betas)):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}", params=("betas",))
