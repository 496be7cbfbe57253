"""``pyroseq data``: corpus statistics."""

from __future__ import annotations

import click

from pyroseq.cli.common import POSITIVE, corpus_source, emit, handle_errors, json_option
from pyroseq.data.polyphonic import SPLITS, load_polyphonic
from pyroseq.data.text import load_text
from pyroseq.data.words import load_words


@click.group("data")
def data_command() -> None:
    """Show statistics of a corpus (the words of the word task, running text, or polyphonic music)."""


@data_command.command("words")
@click.option(
    "--source", default="symspell", show_default=True, help="symspell, german, sample, or a file path."
)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    help="A UTF-8 file: `word count` lines or one word per line.",
)
@click.option(
    "--top",
    type=POSITIVE,
    help="Keep the N most frequent words [default: 10000 for symspell and german, all for a file].",
)
@click.option(
    "--max-length", type=POSITIVE, help="Drop words longer than this [default: 12 for named sources]."
)
@json_option
@handle_errors
def words_command(
    source: str, path: str | None, top: int | None, max_length: int | None, as_json: bool
) -> None:
    """Words with counts: size, alphabet, length distribution, entropy H(p)."""
    corpus = load_words(corpus_source(source, path, source_flag="source"), top=top, max_length=max_length)
    s = corpus.stats()
    lines = [
        f"word corpus: {s['source']}",
        f"  words: {s['num_words']}   symbols: {s['num_symbols']} ({s['alphabet']})",
        f"  H(p): {s['entropy_nats']:.3f} nats = {s['entropy_bits']:.3f} bits per word",
        f"  mean length: {s['mean_length']:.3f} symbols with EOS (under p);  max {s['max_length']}",
        "  word lengths: " + "  ".join(f"{k}:{v}" for k, v in s["word_length_histogram"].items()),
        *(f"  note: {n}" for n in s["notes"]),
    ]
    emit(s, as_json, lines)


@data_command.command("text")
@click.option(
    "--source", default="shakespeare", show_default=True, help="shakespeare, sample, or a file path."
)
@click.option("--file", "path", type=click.Path(dir_okay=False), help="A UTF-8 text file.")
@json_option
@handle_errors
def text_command(source: str, path: str | None, as_json: bool) -> None:
    """Running text: size, splits, alphabet."""
    corpus = load_text(corpus_source(source, path, source_flag="source"))
    s = corpus.stats()
    sizes = s["split_chars"]
    lines = [
        f"text corpus: {s['source']}",
        f"  characters: {s['num_chars']}",
        f"  split: train {sizes['train']} / valid {sizes['valid']} / test {sizes['test']}",
        f"  symbols: {s['num_symbols']}   lines: {s['num_lines']}",
        *(f"  note: {n}" for n in s["notes"]),
    ]
    emit(s, as_json, lines)


@data_command.command("polyphonic")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(dir_okay=False),
    help="A polyphonic pickle (e.g. jsb_chorales.pickle from github.com/pyro-ppl/datasets, polyphonic/).",
)
@json_option
@handle_errors
def polyphonic_command(path: str, as_json: bool) -> None:
    """Polyphonic music (88-key piano rolls): each split's sequences, frames, notes per frame, polyphony."""
    s = load_polyphonic(path).stats()
    lines = [f"polyphonic corpus: {s['source']}", f"  sha256: {s['sha256']}"]
    for name in SPLITS:
        split = s["splits"][name]
        pitches = "{}-{}".format(*split["pitch_range"]) if split["pitch_range"] else "none (all rests)"
        lines.append(
            f"  {name:5s}  sequences {split['sequences']:4d}   frames {split['frames']:6d}   "
            f"notes per frame {split['mean_notes_per_frame']:.3f}   max polyphony {split['max_polyphony']}   "
            f"mean length {split['mean_length']:.1f} (max {split['max_length']})   pitches {pitches}"
        )
    emit(s, as_json, lines)
