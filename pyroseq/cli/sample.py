"""``pyroseq sample``: decode sequences from a trained run."""

from __future__ import annotations

import click

from pyroseq.cli.common import (
    POSITIVE,
    POSITIVE_FLOAT,
    SEED,
    Finite,
    emit,
    handle_errors,
    json_option,
    threads_option,
)
from pyroseq.data.polyphonic import PolyphonicCorpus, roll_pitches
from pyroseq.data.words import WordCorpus
from pyroseq.decode import DECODERS, decode, seeded
from pyroseq.errors import ConfigError
from pyroseq.predictive import sample_frames
from pyroseq.runs.rundir import LoadedRun, load_run


@click.command("sample")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-n", "num", type=POSITIVE, default=20, show_default=True, help="How many sequences.")
@click.option("--decoder", type=click.Choice(DECODERS), default="ancestral", show_default=True)
@click.option(
    "--temperature",
    type=POSITIVE_FLOAT,
    default=1.0,
    show_default=True,
    help="Divides the logits. Any positive value; a tiny one (down to subnormals such as 1e-320) picks the "
    "most probable symbol at each step, the limit --decoder greedy.",
)
@click.option("--top-k", type=POSITIVE, help="topk: keep the K most probable symbols.")
@click.option(
    "--top-p", type=Finite(0, 1, min_open=True), help="nucleus: keep the smallest set with this much mass."
)
@click.option("--beam-size", type=POSITIVE, help="beam: the beam width B (default n).")
@click.option(
    "--beam-sampled", is_flag=True, help="beam: expand by sampled continuations instead of the top B."
)
@click.option("--length-normalise", is_flag=True, help="beam: rank by log-probability per symbol.")
@click.option(
    "--max-length",
    type=POSITIVE,
    help="Most symbols per sequence, EOS included [default: words: longest word; text: chunk length]; "
    "polyphonic: frames per sequence [default: the training split's median length].",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@threads_option
@json_option
@handle_errors
def sample_command(
    run_dir: str, num: int, decoder: str, temperature: float, top_k: int | None, top_p: float | None,
    beam_size: int | None, beam_sampled: bool, length_normalise: bool, max_length: int | None, seed: int,
    device: str, as_json: bool,
) -> None:  # fmt: skip
    """Decode N sequences from the model of RUN_DIR (DSSM: along sampled state trajectories); a model of
    polyphonic music draws N sequences of frames, printed as the MIDI pitches of each frame."""
    run = load_run(run_dir, device=device)
    corpus = run.corpus()
    if isinstance(corpus, PolyphonicCorpus):
        given = _decoder_options_given(
            decoder, temperature, top_k, top_p, beam_size, beam_sampled, length_normalise
        )
        if given:
            raise ConfigError(
                f"{', '.join(given)}: a model of frames draws each frame from its law (ancestral sampling); "
                "the decoders choose symbols: drop them"
            )
        _sample_frames(run, corpus, num=num, length=max_length, seed=seed, as_json=as_json)
        return
    words = isinstance(corpus, WordCorpus)
    if max_length is None:
        max_length = corpus.max_length if words else run.config.chunk_length
    decoded = decode(
        run.model, num=num, max_length=max_length, decoder=decoder, temperature=temperature, top_k=top_k,
        top_p=top_p, beam_size=beam_size, beam_sampled=beam_sampled, length_normalise=length_normalise,
        seed=seed,
    )  # fmt: skip
    known = set(corpus.words) if words else set()
    samples = []
    for ids, score in decoded:
        text = run.vocab.decode(ids)
        sample = {"text": text, "score": score, "length": len(ids)}
        if words:
            sample["in_vocabulary"] = text in known
        samples.append(sample)
    result = {"run_dir": str(run.path), "model": run.config.model, "decoder": decoder, "samples": samples}
    lines = [f"{decoder} samples from {run.path} (score: log-probability of the emitted symbols)"]
    for s in samples:
        flag = "" if not words else ("  [word]" if s["in_vocabulary"] else "")
        lines.append(f"  {s['score']:9.3f}  {s['text']!r}{flag}")
    if words:
        result["in_vocabulary_fraction"] = sum(s["in_vocabulary"] for s in samples) / len(samples)
        lines.append(f"  {result['in_vocabulary_fraction']:.0%} are words of the corpus")
    emit(result, as_json, lines)


def _decoder_options_given(
    decoder, temperature, top_k, top_p, beam_size, beam_sampled, length_normalise
) -> list[str]:
    """The decoder options set away from their defaults."""
    given = {"--decoder": decoder != "ancestral", "--temperature": temperature != 1.0, "--top-k": top_k,
             "--top-p": top_p, "--beam-size": beam_size, "--beam-sampled": beam_sampled,
             "--length-normalise": length_normalise}  # fmt: skip
    return [flag for flag, on in given.items() if on]


def _sample_frames(
    run: LoadedRun, corpus: PolyphonicCorpus, *, num: int, length: int | None, seed: int, as_json: bool
) -> None:
    """Draw ``num`` sequences of frames (default length: the training split's median) and print them."""
    if length is None:
        length = int(corpus.train.lengths.median())
    with seeded(seed):
        frames = sample_frames(run.model, num=num, length=length).cpu()  # (num, T, 88)
    samples = [{"pitches": roll_pitches(roll), "length": length} for roll in frames]
    notes = frames.sum(-1)  # (num, T)
    result = {
        "run_dir": str(run.path), "model": run.config.model, "samples": samples,
        "mean_notes_per_frame": float(notes.mean()), "max_polyphony": int(notes.max()),
    }  # fmt: skip
    lines = [f"{num} sequences of {length} frames from {run.path} (MIDI pitches per frame; '-' a rest)"]
    for i, sample in enumerate(samples, start=1):
        shown = " | ".join(" ".join(map(str, p)) if p else "-" for p in sample["pitches"])
        lines.append(f"  {i:3d}: {shown}")
    lines.append(
        f"  notes per frame {result['mean_notes_per_frame']:.3f} (the training split: "
        f"{corpus.train.stats()['mean_notes_per_frame']:.3f}), max polyphony {result['max_polyphony']}"
    )
    emit(result, as_json, lines)
