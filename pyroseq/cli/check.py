"""``pyroseq check``: a predictive check of a trained run on the word task."""

from __future__ import annotations

import warnings

import click
import torch

from pyroseq.cli.common import POSITIVE, SEED, emit, handle_errors, json_option
from pyroseq.data.polyphonic import PolyphonicCorpus
from pyroseq.data.words import WordCorpus
from pyroseq.errors import ConfigError
from pyroseq.predictive import check_frames, check_words, plot_ppc
from pyroseq.runs.rundir import LoadedRun, load_run


@click.command("check")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--words",
    "num_words",
    type=POSITIVE,
    default=256,
    show_default=True,
    help="Observed words drawn from p(w) (polyphonic: the first N sequences of the test split).",
)
@click.option("--samples", type=POSITIVE, default=20, show_default=True, help="Replicates per observed word.")
@click.option("--prior", is_flag=True, help="Prior predictive instead of posterior predictive.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@json_option
@handle_errors
def check_command(
    run_dir: str, num_words: int, samples: int, prior: bool, seed: int, device: str, as_json: bool
) -> None:
    """Posterior (or prior) predictive check of word lengths and real-word rate (polyphonic music: of
    notes per frame and polyphony), with an ArviZ plot."""
    run = load_run(run_dir, device=device)
    corpus = run.corpus()
    if isinstance(corpus, PolyphonicCorpus):
        torch.manual_seed(seed)
        _check_frames(run, corpus, num_words, samples, prior, device, as_json)
        return
    if not isinstance(corpus, WordCorpus):
        raise ConfigError(f"{run_dir} was trained on text; pyroseq check compares words with p(w)")
    torch.manual_seed(seed)
    batch = corpus.draw_batch(num_words, seed=seed, device=device)
    summary, idata = check_words(
        run.model, run.guide, batch, run.vocab, corpus.words, num_samples=samples, posterior=not prior
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's notices about its coming refactor
        summary["plot"] = str(plot_ppc(idata, run.path / f"ppc_{summary['kind']}_length.png"))
    lines = [
        f"{summary['kind']} predictive check of {run.path} on {summary['num_sequences']} words x {samples} replicates",
        f"  drawn: {summary['drawn']}",
        f"  mean length: observed {summary['observed_mean_length']:.3f}, replicated "
        f"{summary['replicated_mean_length']:.3f} ± {summary['replicated_mean_length_sd']:.3f}  (p = {summary['p_value_mean_length']:.3f})",
        f"  replicates that are words of the corpus: {summary['in_vocabulary_fraction']:.1%}",
        "  e.g. " + " ".join(repr(t) for t in summary["examples"]),
        f"  plot: {summary['plot']}",
    ]
    emit(summary, as_json, lines)


def _check_frames(
    run: LoadedRun, corpus: PolyphonicCorpus, num: int, samples: int, prior: bool, device: str, as_json: bool
) -> None:
    """The check of notes per frame and polyphony on the first ``num`` test sequences."""
    batch = corpus.test.batch(range(min(num, len(corpus.test))), device=device)
    summary, idata = check_frames(run.model, run.guide, batch, num_samples=samples, posterior=not prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's notices about its coming refactor
        summary["plot"] = str(plot_ppc(idata, run.path / f"ppc_{summary['kind']}_notes.png", var="notes"))
    lines = [
        f"{summary['kind']} predictive check of {run.path} on {summary['num_sequences']} test sequences "
        f"({summary['num_frames']} frames) x {samples} replicates",
        f"  drawn: {summary['drawn']}",
        f"  notes per frame: observed {summary['observed_mean_notes']:.3f}, replicated "
        f"{summary['replicated_mean_notes']:.3f} ± {summary['replicated_mean_notes_sd']:.3f}  "
        f"(p = {summary['p_value_mean_notes']:.3f})",
        f"  polyphony (most notes in a frame, mean over sequences): observed "
        f"{summary['observed_mean_polyphony']:.3f}, replicated {summary['replicated_mean_polyphony']:.3f}  "
        f"(p = {summary['p_value_polyphony']:.3f})",
        f"  plot: {summary['plot']}",
    ]
    emit(summary, as_json, lines)
