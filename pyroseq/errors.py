"""Errors a user can cause, each with a message that says what was wrong and what to do.

The command line prints these as one line and exits with status 2; everything else is a bug.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

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
    """Base class of every error that pyroseq raises for bad user input.

    A message names the Python parameters it is about (``top must be positive, got 0``); ``params`` lists
    them, so that a front end can name them in its own terms (the command line: its flags, ``--top``).
    """

    def __init__(self, *args: object, params: Sequence[str] = ()) -> None:
        super().__init__(*args)
        self.params = tuple(params)

    def naming(self, names: Mapping[str, str]) -> str:
        """The message with each of its ``params`` written as ``names`` (a default: ``--name-with-dashes``)
        says it, where it stands as a name: ``top`` and ``top=3`` become ``--top`` and ``--top 3``,
        ``resume=True`` becomes ``--resume``.

        A parameter stands as a name where the message first mentions it as a word of its own, wherever it
        is written ``name=value``, and everywhere if it has an underscore (no English word has one); a
        later bare mention of a plain word is prose and stays (``training professor ... which data-parallel
        training does not average`` names ``--training`` once).
        """
        message = str(self)
        for param in self.params:
            said = names.get(param, "--" + param.replace("_", "-"))
            # resume=True is the flag alone, top=0 the flag and its value, top the flag.
            pattern = rf"(?<![\w./-]){re.escape(param)}(=True\b|=|(?![\w(/]))"
            found = list(re.finditer(pattern, message))
            for n, match in reversed(list(enumerate(found))):
                if n == 0 or match.group(1) or "_" in param:
                    flag = said + (" " if match.group(1) == "=" else "")
                    message = message[: match.start()] + flag + message[match.end() :]
        return message


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
