"""``pyroseq evaluate``: the paper's measurements of a trained run."""

from __future__ import annotations

import sys
from typing import Any

import click

from pyroseq.cli.common import POSITIVE, SEED, emit, handle_errors, json_option, threads_option
from pyroseq.evaluate import ACTIVE_THRESHOLD, WORD_ESTIMATORS
from pyroseq.evaluate.run import ACTIVITY_WORDS, BOUND_KS, evaluate_run


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--samples", "-k", type=POSITIVE, default=100, show_default=True, help="K: trajectories or particles."
)
@click.option(
    "--repeats", type=POSITIVE, help="smc: R independent filter runs, for the standard error [default: 4]."
)
@click.option(
    "--jackknife",
    is_flag=True,
    default=None,
    help="smc: correct the log-mean's bias with the jackknife over the R runs (R >= 2).",
)
@click.option(
    "--estimator",
    type=click.Choice(list(WORD_ESTIMATORS)),
    help="log q(w) estimator [default: exact for RNNs, iwae (the guide, K particles per word) for the "
    "DSSM; on text: exact for RNNs, iwae for the DSSM].",
)
@click.option(
    "--bounds/--no-bounds",
    default=True,
    show_default=True,
    help=f"DSSM: ELBO and IWAE_K, K in {{{', '.join(map(str, BOUND_KS))}}}.",
)
@click.option(
    "--bound-words",
    type=POSITIVE,
    default=256,
    show_default=True,
    help="Words drawn from p(w) for the bounds.",
)
@click.option(
    "--noise/--no-noise",
    default=True,
    show_default=True,
    help="DSSM: per-step entropy and noise MI, with a plot.",
)
@click.option(
    "--noise-samples",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    help="Outer and inner draws of the MI estimator (at least 2: one inner draw gives MI 0 by construction).",
)
@click.option(
    "--activity/--no-activity",
    default=False,
    show_default=True,
    help="DSSM: the active noise dimensions under the guide (Burda et al. 2016: Var_w E_q[xi_{t,d}] > "
    f"{ACTIVE_THRESHOLD:g}).",
)
@click.option(
    "--activity-words",
    type=click.IntRange(min=2),
    default=ACTIVITY_WORDS,
    show_default=True,
    help="Words drawn from p(w) for the activity (at least 2: it is a variance across words).",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
@threads_option
@json_option
@handle_errors(flags={"num_samples": "--samples", "num_repeats": "--repeats"})
def evaluate_command(
    run_dir: str, samples: int, repeats: int | None, jackknife: bool | None, estimator: str | None, bounds: bool, bound_words: int,
    noise: bool, noise_samples: int, activity: bool, activity_words: int, device: str, seed: int,
    progress: bool | None, as_json: bool,
) -> None:  # fmt: skip
    """Measure a trained run: cross-entropy against p(w), KL, vocabulary mass, bounds, noise usage
    (word task); NLL, perplexity, bits per character, accuracy on the test split (text); NLL per frame
    (ELBO and IWAE_K) and next-frame accuracy and F1 on the test split (polyphonic)."""
    result = evaluate_run(
        run_dir, num_samples=samples, num_repeats=repeats, jackknife=jackknife, estimator=estimator, bounds=bounds,
        bound_words=bound_words, noise=noise, noise_samples=noise_samples, activity=activity,
        activity_words=activity_words, device=device, seed=seed,
        progress=progress if progress is not None else sys.stderr.isatty(),
    )  # fmt: skip
    emit(result, as_json, _lines(result))


def _lines(result: dict[str, Any]) -> list[str]:
    """What a person reads of :func:`~pyroseq.evaluate.evaluate_run`'s result."""
    lines = [f"run {result['run_dir']} ({result['model']}, step {result['step']})"]
    if "nll_elbo" in result:
        k = result["num_particles"]
        lines.append(f"  test: {result['num_sequences']} sequences, {result['num_frames']} frames; NLL per frame "
                     f"(nats): ELBO {result['nll_elbo']:.4f} ± {result['nll_elbo_stderr']:.4f}")  # fmt: skip
        if f"nll_iwae_{k}" in result:
            lines[-1] += f"   IWAE_{k} {result[f'nll_iwae_{k}']:.4f} ± {result[f'nll_iwae_{k}_stderr']:.4f}"
        p = result["prediction"]
        lines.append(f"  next frame (keys with p > {p['threshold']}): accuracy {p['accuracy']:.4f}, precision "
                     f"{p['precision']:.4f}, recall {p['recall']:.4f}, F1 {p['f1']:.4f}")  # fmt: skip
        return lines
    if "nll_nats" in result:
        lines.append(f"  test: NLL {result['nll_nats']:.4f} nats/symbol, perplexity {result['perplexity']:.3f}, "
                     f"BPC {result['bpc']:.4f}, accuracy {result['accuracy']}")  # fmt: skip
        return lines
    lines += [
        f"  estimator: {result['estimator']} (K={result['samples']}"
        + (f", R={result['repeats']} runs" if result["estimator"] == "smc" else "")
        + (", jackknife" if result["jackknife"] else "")
        + f"), {result['cpu_seconds']:.1f} CPU s",
        f"  CE   {result['ce_nats']:.4f} ± {result['ce_stderr']:.4f} nats/word   H(p) {result['entropy_nats']:.4f}",
        f"  KL   {result['kl_nats']:.4f} nats/word   vocabulary mass {result['vocab_mass']:.4f}",
    ]
    if "bounds" in result:
        b = result["bounds"]
        lines.append(
            "  bounds (nats/word): "
            + "  ".join(f"{k} {v:.3f}" for k, v in b.items() if isinstance(v, float) and "stderr" not in k)
        )
    if "noise" in result:
        mi = result["noise"]["mutual_information_nats"]
        lines.append("  MI per step (nats): " + " ".join(f"{v:.3f}" for v in mi))
        lines.append(f"  noise plot: {result['noise']['plot']}")
    if "activity" in result:
        a = result["activity"]
        lines.append(f"  active noise dimensions: {a['num_active']} of {a['state_dim']} (activity > "
                     f"{a['threshold']:g} on {a['num_sequences']} words, K={a['num_samples']}): "
                     + " ".join(f"{v:.3f}" for v in a["dimension_activity"]))  # fmt: skip
    return lines
