"""Checks of user-supplied sizes, shared by models, guides and estimators."""

from __future__ import annotations

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError

__all__ = ["check_positive_sizes", "check_vocab_size"]


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
