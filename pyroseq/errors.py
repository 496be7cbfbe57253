"""Errors a user can cause, each with a message that says what was wrong and what to do.

The command line prints these as one line and exits with status 2; everything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "PyroseqError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "DeviceError",
    "ResourceError",
    "StorageError",
    "RunLockedError",
    "NonFiniteError",
    "first_line",
]


class PyroseqError(Exception):
    """Base class of every error that pyroseq raises for bad user input."""


class DataError(PyroseqError, ValueError):
    """A corpus, file or sequence cannot be used (missing, empty, malformed, unknown symbols)."""


class ConfigError(PyroseqError, ValueError):
    """An option has an invalid value (unknown name, non-positive size, ...)."""


class CheckpointError(PyroseqError, RuntimeError):
    """A checkpoint or run directory is missing, corrupt or does not match the request."""


class DeviceError(PyroseqError, RuntimeError):
    """The requested device is not available."""


class ResourceError(PyroseqError, MemoryError):
    """The requested sizes need more memory than the device has (the message gives the estimate)."""


class StorageError(PyroseqError, OSError):
    """A file or directory cannot be written or read: permissions, a full disk, a foreign directory."""


class RunLockedError(PyroseqError, RuntimeError):
    """Another process is training the run directory (the message names its PID)."""


class NonFiniteError(PyroseqError, FloatingPointError):
    """Training diverged: a parameter or a latent sample became NaN or infinite (the message names it)."""


def first_line(error: BaseException, *, limit: int = 300) -> str:
    """The first line of ``error``'s message (its type's name if the message is empty), cut to ``limit``
    characters: how a one-line pyroseq error quotes the library error behind it."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]
