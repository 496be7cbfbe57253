"""Keep freed memory for the next training step: glibc's malloc thresholds, raised for this process.

A training step allocates and frees tensors of a few megabytes (one ``(4, 256, 13, 64)`` hidden layer of
the DSSM's hypernets is 3.4 MB). glibc's malloc serves each allocation above its mmap threshold (128 KiB,
rising as such blocks are freed) from fresh pages of ``mmap`` and unmaps them on free, so every step pays
page faults and zeroes its memory again, and frees at the top of the heap are returned to the system above
the trim threshold (128 KiB). :func:`keep_freed_memory` raises both thresholds with ``mallopt``, the call
behind the ``GLIBC_TUNABLES`` variables ``glibc.malloc.mmap_threshold`` and ``glibc.malloc.trim_threshold``:
the freed blocks stay in the heap and the next step reuses them (docs/benchmarks.md measures it). It changes
where memory comes from, never a value: a step's losses and gradients are the same to the last bit.

The process keeps up to ``trim_threshold`` bytes of freed memory it does not use; a process that trains is
the process this is for. ``pyroseq``'s command line calls it once at start; a script calls it the same way::

    from pyroseq.runs.allocator import keep_freed_memory
    keep_freed_memory()
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest dynamic mmap threshold on 64-bit systems
TRIM_THRESHOLD = 256 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_INT_MAX = 2**31 - 1


def keep_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD, *, override: bool = False
) -> bool:
    """Raise glibc malloc's mmap and trim thresholds for this process; True if both were set.

    Args:
        mmap_threshold: allocations of at least this many bytes get their own ``mmap`` (unmapped on free);
            smaller ones come from the heap and are reused. At most 32 MiB (``HEAP_MAX`` / 2 on 64-bit glibc).
        trim_threshold: free memory at the top of the heap beyond this many bytes is given back to the
            system.
        override: set the thresholds even where the user's ``GLIBC_TUNABLES`` sets malloc's own (by default
            the user's setting stands and nothing is changed).

    Returns False, changing nothing, on a C library other than glibc (macOS, musl, Windows) and where
    ``GLIBC_TUNABLES`` already sets a ``glibc.malloc`` tunable and ``override`` is False.
    """
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int of bytes, got {value!r}")
    if mmap_threshold > MMAP_THRESHOLD:
        raise ValueError(f"mmap_threshold must be at most {MMAP_THRESHOLD} bytes, got {mmap_threshold}")
    if trim_threshold > _INT_MAX:
        raise ValueError(f"trim_threshold must be at most {_INT_MAX} bytes (a C int), got {trim_threshold}")
    if not override and "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # both calls run (not `and`); setting the mmap threshold also stops glibc from raising it by itself
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) & bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
