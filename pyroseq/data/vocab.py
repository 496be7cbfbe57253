"""Vocabulary: symbols <-> integer ids, with the special symbols PAD, BOS and EOS."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

from pyroseq.errors import DataError

__all__ = ["Vocabulary", "PAD", "BOS", "EOS"]

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"


class Vocabulary:
    """A fixed map between symbols (single characters) and ids.

    Ids 0, 1 and 2 are PAD, BOS and EOS; the data's symbols follow in sorted order, so the same set of
    symbols always gives the same ids. A vocabulary travels with every checkpoint (:meth:`to_dict`).

    Args:
        symbols: the alphabet of the data (duplicates are ignored; specials must not appear).

    Examples:
        >>> vocab = Vocabulary("cab")
        >>> vocab.symbols
        ['<pad>', '<bos>', '<eos>', 'a', 'b', 'c']
        >>> vocab.encode("cab")
        [5, 3, 4, 2]
        >>> vocab.decode([5, 3, 4, 2, 0, 0])
        'cab'
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    specials = (PAD, BOS, EOS)

    def __init__(self, symbols: Iterable[str]) -> None:
        alphabet = sorted(set(symbols))
        for s in alphabet:
            if s in self.specials or len(s) != 1:
                raise DataError(f"vocabulary symbols must be single characters, got {s!r}")
        if not alphabet:
            raise DataError("cannot build a vocabulary from no symbols: the data is empty")
        self.symbols: list[str] = list(self.specials) + alphabet
        self._index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """The vocabulary of every character that occurs in ``texts``."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(chars)

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.symbols == other.symbols

    def __repr__(self) -> str:
        return f"Vocabulary({''.join(self.alphabet)!r})"

    @property
    def alphabet(self) -> list[str]:
        """The data's symbols, without the specials."""
        return self.symbols[len(self.specials) :]

    def encode(self, text: str, *, add_eos: bool = True) -> list[int]:
        """Ids of ``text``'s symbols (in Unicode NFC), followed by EOS unless ``add_eos=False``."""
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        try:
            ids = [self._index[c] for c in text]
        except KeyError as e:
            raise DataError(
                f"symbol {e.args[0]!r} in {text!r} is not in the vocabulary "
                f"({''.join(self.alphabet)!r}); filter the data or build the vocabulary from it"
            ) from None
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
        """The text of ``ids``; stops at the first EOS (or PAD) and skips BOS."""
        out = []
        for i in ids:
            i = int(i)
            if i in (self.eos_id, self.pad_id) and stop_at_eos:
                break
            if i < len(self.specials):
                continue
            out.append(self.symbols[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description; :meth:`from_dict` inverts it."""
        return {"alphabet": "".join(self.alphabet)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        try:
            return cls(data["alphabet"])
        except (KeyError, TypeError):
            raise DataError(f"not a serialised vocabulary: {data!r}") from None
