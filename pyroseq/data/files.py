"""Reading users' files with errors that say what is wrong."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from pyroseq.errors import DataError

__all__ = ["read_text_file", "to_nfc"]


def read_text_file(path: str | Path) -> str:
    """The contents of a UTF-8 text file; :class:`DataError` if missing, a directory, unreadable, empty or
    not UTF-8."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied; make it readable (chmod u+r)") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path} is not UTF-8 (byte {e.start}, line {line}); convert it to UTF-8") from None
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text.removeprefix("\ufeff")


def to_nfc(text: str) -> tuple[str, int]:
    """``text`` in Unicode normal form NFC, and how many of its lines that changed.

    NFD text writes 'é' as 'e' plus a combining accent (U+0301), which is not a letter on its own; NFC
    composes it into one symbol, so that the same word always has the same symbols.
    """
    if unicodedata.is_normalized("NFC", text):
        return text, 0
    lines = text.splitlines(keepends=True)
    normal = [unicodedata.normalize("NFC", line) for line in lines]
    return "".join(normal), sum(a != b for a, b in zip(lines, normal, strict=True))
