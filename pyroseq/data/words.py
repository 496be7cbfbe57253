"""The word corpus: single words as symbol sequences, drawn from their unigram distribution p(w).

This is the task of Schmidt & Hofmann (2018): model each word as a sequence of characters ending in EOS,
against the known distribution p(w) = count(w) / total over the kept words.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pyroseq.data.batch import Batch, SeededSampler, longest_first, pad_batch, seeded_generator
from pyroseq.data.files import read_text_file, to_nfc
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import DataError

__all__ = ["WordCorpus", "WordSampler", "load_words", "WORD_SOURCES", "DEFAULT_TOP", "DEFAULT_MAX_LENGTH"]

DEFAULT_TOP = 10_000
DEFAULT_MAX_LENGTH = 12
MAX_COUNT = 2**63 - 1  # counts and their sum are int64
LONG_WORD = 256  # a file's words longer than this need an explicit max_length (see load_words)
SYMSPELL_FILE = "frequency_dictionary_en_82_765.txt"
WORD_SOURCES = ("symspell", "german", "sample")
_ENGLISH = re.compile("[a-z]+")  # letters only; max_length (default 12) cuts the length
_GERMAN = re.compile("[a-zäöüß]+")
_LETTERS = {"symspell": _ENGLISH, "sample": _ENGLISH, "german": _GERMAN}


@dataclass
class WordCorpus:
    """Words with counts, sorted by count (descending), and their distribution p(w).

    Attributes:
        words: the kept words, most frequent first.
        counts: ``(N,)`` int64 counts (all ones for a plain word list).
        vocab: the symbols of the words, plus PAD/BOS/EOS.
        source: where the words came from (a source name or a path).
        notes: the filters applied, as sentences for the user ("dropped 12 words longer than 12 symbols").
    """

    words: list[str]
    counts: np.ndarray
    vocab: Vocabulary
    source: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.words) == 0:
            raise DataError(f"the word corpus {self.source!r} has no words after filtering")
        try:
            self.counts = np.asarray(self.counts, dtype=np.int64)
        except OverflowError:
            raise DataError(f"the word corpus {self.source!r} has a count above {MAX_COUNT}") from None
        if len(self.words) != len(self.counts):
            raise DataError("words and counts differ in length")
        if (self.counts <= 0).any():
            raise DataError(f"the word corpus {self.source!r} has a count that is not positive")
        total = int(self.counts.sum(dtype=object))  # exact: an int64 sum would wrap around
        if total > MAX_COUNT:
            raise DataError(
                f"the counts of {self.source!r} sum to {total}, more than {MAX_COUNT} (int64); divide them "
                "by a common factor: p(w) only needs their ratios"
            )

    def __len__(self) -> int:
        return len(self.words)

    @property
    def probs(self) -> np.ndarray:
        """p(w) = count(w) / sum of counts, ``(N,)`` float64."""
        return self.counts / self.counts.sum()

    @property
    def entropy_nats(self) -> float:
        """H(p) = -sum_w p(w) log p(w), the floor of the sequence cross-entropy, in nats per word."""
        p = self.probs
        return float(-(p * np.log(p)).sum())

    @property
    def entropy_bits(self) -> float:
        return self.entropy_nats / math.log(2)

    @property
    def lengths(self) -> np.ndarray:
        """Number of symbols per word, EOS included, ``(N,)``."""
        return np.array([len(w) + 1 for w in self.words])

    @property
    def mean_length(self) -> float:
        """Expected number of symbols per word under p(w), EOS included."""
        return float((self.probs * self.lengths).sum())

    @property
    def max_length(self) -> int:
        """The longest word in symbols, EOS included: the T every batch is padded to."""
        return int(self.lengths.max())

    def encode(self) -> list[list[int]]:
        """Every word as ids ending in EOS."""
        return [self.vocab.encode(w) for w in self.words]

    def batch(
        self, indices: Sequence[int] | None = None, *, device: torch.device | str | None = None
    ) -> Batch:
        """The words at ``indices`` (default all) as one batch padded to :attr:`max_length`."""
        words = self.words if indices is None else [self.words[int(i)] for i in indices]
        return pad_batch([self.vocab.encode(w) for w in words], max_length=self.max_length, device=device)

    def draw_batch(self, n: int, *, seed: int, device: torch.device | str | None = None) -> Batch:
        """``n`` words drawn i.i.d. from p(w) with a generator seeded by ``seed``, as one padded batch.

        Draws the same words as the first batch of ``sampler(n, seed=seed)`` (which puts them longest first),
        without padding the corpus.
        """
        if n <= 0:
            raise DataError(f"batch size must be positive, got {n}")
        generator = seeded_generator(seed)
        probs = torch.as_tensor(self.probs, dtype=torch.float64)
        return self.batch(torch.multinomial(probs, n, replacement=True, generator=generator), device=device)

    def sampler(
        self, batch_size: int, *, seed: int = 0, device: torch.device | str | None = None
    ) -> WordSampler:
        """Minibatches of words drawn i.i.d. from p(w); see :class:`WordSampler`."""
        return WordSampler(self, batch_size, seed=seed, device=device)

    def stats(self) -> dict:
        """Corpus statistics as a JSON-serialisable dict."""
        hist = np.bincount(self.lengths - 1, minlength=self.max_length)[1:]
        return {
            "corpus": "words",
            "source": self.source,
            "num_words": len(self),
            "num_symbols": len(self.vocab.alphabet),
            "alphabet": "".join(self.vocab.alphabet),
            "total_count": int(self.counts.sum()),
            "entropy_nats": round(self.entropy_nats, 6),
            "entropy_bits": round(self.entropy_bits, 6),
            "mean_length": round(self.mean_length, 6),
            "max_length": self.max_length,
            "word_length_histogram": {str(n): int(c) for n, c in enumerate(hist, start=1) if c},
            "notes": self.notes,
        }


class WordSampler(SeededSampler):
    """An endless stream of minibatches of words drawn i.i.d. from p(w), reproducible from a seed.

    Every batch is padded to the corpus's longest word, so batches have a fixed shape ``(B, T)``; its rows
    run longest first (:func:`~pyroseq.data.batch.longest_first`).
    """

    def __init__(
        self,
        corpus: WordCorpus,
        batch_size: int,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(batch_size, seed=seed, device=device)
        self._probs = torch.as_tensor(corpus.probs, dtype=torch.float64)
        all_words = corpus.batch()
        self._ids, self._lengths = all_words.ids, all_words.lengths  # (N, T), (N,)

    def indices(self) -> Tensor:
        """Indices of the next batch's words, ``(B,)``."""
        return torch.multinomial(self._probs, self.batch_size, replacement=True, generator=self.generator)

    def __next__(self) -> Batch:
        idx = longest_first(self.indices(), self._lengths)
        ids = self._ids[idx]
        lengths = self._lengths[idx]
        mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]  # (B, T)
        return self._placed(Batch(ids, mask, lengths))


def _symspell_path() -> Path:
    try:
        import symspellpy
    except ImportError:
        raise DataError(
            "the default word corpus comes from the symspellpy package, which is not installed; "
            "run `pip install symspellpy` (or pyroseq[data]), or pass a file as the source",
            params=("source",),
        ) from None
    path = Path(symspellpy.__file__).parent / SYMSPELL_FILE
    if not path.is_file():
        raise DataError(
            f"symspellpy is installed but lacks {SYMSPELL_FILE}; reinstall it or pass a file as the source",
            params=("source",),
        )
    return path


def _sample_path() -> Path:
    return Path(str(resources.files("pyroseq.data") / "samples" / "words.txt"))


def _german_text() -> str:
    """pyspellchecker's German word frequencies (``de.json.gz``: word -> count) as ``word count`` lines."""
    try:
        import spellchecker
    except ImportError:
        raise DataError(
            "the German word corpus comes from the pyspellchecker package, which is not installed; "
            "run `pip install pyspellchecker` (or pyroseq[data]), or pass a file path"
        ) from None
    path = Path(spellchecker.__file__).parent / "resources" / "de.json.gz"
    try:
        counts = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read pyspellchecker's German frequencies {path}: {error}") from None
    return "".join(f"{word} {count}\n" for word, count in counts.items())


def _named_text(source: str) -> str:
    if source == "german":
        return _german_text()
    return read_text_file(_symspell_path() if source == "symspell" else _sample_path())


def _parse_lines(text: str, source: str) -> tuple[list[str], list[int], bool]:
    """Words and counts of a ``word count`` file, or of a one-word-per-line file (counts 1)."""
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not rows:
        raise DataError(f"{source} has no words: expected `word count` lines or one word per line")
    with_counts = len(rows[0][1]) == 2
    words, counts, seen = [], [], {}
    for n, fields in rows:
        if len(fields) != (2 if with_counts else 1):
            expected = "`word count`" if with_counts else "one word"
            raise DataError(f"{source}, line {n}: expected {expected} like line {rows[0][0]}, got {fields!r}")
        word = fields[0]
        count = 1
        if with_counts:
            try:
                count = int(fields[1])
            except ValueError:
                raise DataError(f"{source}, line {n}: count {fields[1]!r} is not an integer") from None
            if not 0 < count <= MAX_COUNT:
                raise DataError(
                    f"{source}, line {n}: count must be positive and at most {MAX_COUNT}, got {count}"
                )
        if word in seen:
            raise DataError(f"{source}, line {n}: word {word!r} already appeared on line {seen[word]}")
        seen[word] = n
        words.append(word)
        counts.append(count)
    return words, counts, with_counts


def _non_letter_note(dropped: Iterable[str]) -> str:
    """A note on the words dropped for non-letter symbols: how many, which symbols, an example each."""
    dropped = list(dropped)
    symbols = Counter(c for w in dropped for c in set(w) if not c.isalpha())
    examples = {c: next(w for w in dropped if c in w) for c, _ in symbols.most_common(3)}
    named = ", ".join(
        f"{c!r} {unicodedata.name(c, f'U+{ord(c):04X}')} in {n} (e.g. {examples[c]!r})"
        for c, n in symbols.most_common(3)
    )
    return f"dropped {len(dropped)} words with symbols that are not letters: {named}"


def load_words(
    source: str | Path = "symspell",
    *,
    top: int | None = None,
    max_length: int | None = None,
) -> WordCorpus:
    """Load a word corpus.

    Args:
        source: ``"symspell"`` (the English frequency dictionary shipped by the symspellpy package: words
            matching ``[a-z]+``, then cut by ``max_length``), ``"german"`` (the German frequency list shipped
            by the pyspellchecker package, counts from subtitles: words matching ``[a-zäöüß]+``, then cut by
            ``max_length``; a second language for checking a recipe tuned on English), ``"sample"`` (a few
            hundred English words kept in pyroseq), or a path to a UTF-8 file of ``word count`` lines or
            of one word per line (then p is uniform; any Unicode letters are allowed, the text is
            normalised to NFC first, words with other symbols are dropped and reported in ``notes``, and
            the alphabet comes from the data).
        top: keep the N most frequent words. Default: 10,000 for ``"symspell"`` and ``"german"``, all
            words otherwise.
        max_length: drop words longer than this many symbols, reporting how many were dropped.
            Default 12 for the named sources, no limit for a file, except that a file with a word longer
            than 256 symbols needs an explicit ``max_length``: every batch is padded to the longest word,
            so one very long word makes every training step that long.

    Returns:
        the corpus, sorted by count (descending; ties keep file order).
    """
    notes: list[str] = []
    path = Path(source) if isinstance(source, Path) or source not in WORD_SOURCES else None
    if path is None:
        words, counts, _ = _parse_lines(_named_text(source), str(source))
        letters = _LETTERS[source]
        keep = [i for i, w in enumerate(words) if letters.fullmatch(w)]
        if len(keep) < len(words):
            notes.append(f"kept {len(keep)} of {len(words)} words matching {letters.pattern}")
        words, counts = [words[i] for i in keep], [counts[i] for i in keep]
        if top is None and source in ("symspell", "german"):
            top = DEFAULT_TOP
        max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        name = str(source)
    else:
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            raise DataError(
                f"unknown word corpus {str(source)!r}: use one of {', '.join(WORD_SOURCES)} or a file path"
            )
        text, normalised = to_nfc(read_text_file(path))
        if normalised:
            notes.append(
                f"normalised {normalised} line{'s' * (normalised != 1)} to Unicode NFC (a letter and its "
                "combining accent become one symbol, as in 'café')"
            )
        words, counts, _ = _parse_lines(text, str(path))
        letters = [i for i, w in enumerate(words) if w.isalpha()]
        if len(letters) < len(words):
            notes.append(_non_letter_note(words[i] for i in range(len(words)) if not words[i].isalpha()))
            words, counts = [words[i] for i in letters], [counts[i] for i in letters]
        name = str(path)
        longest = max(words, key=len, default="")
        if max_length is None and len(longest) > LONG_WORD:
            raise DataError(
                f"{name} has a word of {len(longest)} characters ({longest[:20]!r}...): every batch is "
                "padded to the longest word; pass max_length=N to drop longer words (or max_length="
                f"{len(longest)} to keep it), or use data='text' for running text",
                params=("max_length", "data"),
            )
    if max_length is not None:
        if max_length <= 0:
            raise DataError(f"max_length must be positive, got {max_length}", params=("max_length",))
        short = [i for i, w in enumerate(words) if len(w) <= max_length]
        if len(short) < len(words):
            notes.append(f"dropped {len(words) - len(short)} words longer than {max_length} symbols")
            words, counts = [words[i] for i in short], [counts[i] for i in short]
    if not words:
        raise DataError(f"no words of {name} are left after filtering ({'; '.join(notes)})")
    order = np.argsort(-np.asarray(counts, dtype=np.int64), kind="stable")
    if top is not None:
        if top <= 0:
            raise DataError(f"top must be positive, got {top}", params=("top",))
        if top > len(words):
            raise DataError(
                f"top={top} is larger than the corpus {name}, which has {len(words)} words", params=("top",)
            )
        order = order[:top]
    kept = [words[i] for i in order]
    return WordCorpus(
        words=kept,
        counts=np.asarray(counts, dtype=np.int64)[order],
        vocab=Vocabulary.from_texts(kept),
        source=name,
        notes=notes,
    )
