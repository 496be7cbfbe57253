"""``pyroseq evaluate``: the paper's measurements of a trained run."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import torch

from pyroseq.cli.common import emit, handle_errors, json_option
from pyroseq.data.words import WordCorpus
from pyroseq.errors import ConfigError
from pyroseq.evaluate import (
    elbo_and_iwae,
    evaluate_text,
    evaluate_text_latent,
    exact_word_log_probs,
    guide_word_log_probs,
    noise_usage,
    plot_noise_usage,
    prior_word_log_probs,
    word_metrics,
)
from pyroseq.infer.rundir import load_run


def _word_task(run: Any, corpus: WordCorpus, estimator: str | None, samples: int, progress: bool) -> dict:
    words = corpus.encode()
    model = run.model
    if model.autoregressive:
        if estimator not in (None, "exact"):
            raise ConfigError(
                f"--estimator {estimator}: an autoregressive model's log q(w) is exact; use exact"
            )
        began = time.process_time()
        estimate = exact_word_log_probs(model, words)
    else:
        estimator = estimator or "prior"
        if estimator == "exact":
            raise ConfigError("--estimator exact: the DSSM's log q(w) has no closed form; use prior or iwae")
        began = time.process_time()
        if estimator == "prior":
            estimate = prior_word_log_probs(model, words, num_samples=samples, progress=progress)
        else:
            estimate = guide_word_log_probs(model, run.guide, words, num_samples=samples, progress=progress)
    metrics = word_metrics(estimate, corpus.probs)
    metrics["cpu_seconds"] = time.process_time() - began
    return metrics


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--samples", "-k", type=int, default=100, show_default=True, help="K: trajectories or particles."
)
@click.option(
    "--estimator",
    type=click.Choice(["exact", "iwae", "prior"]),
    help="log q(w) estimator [default: exact for RNNs, prior for the DSSM; on text: exact for RNNs, "
    "iwae for the DSSM].",
)
@click.option(
    "--bounds/--no-bounds", default=True, show_default=True, help="DSSM: ELBO and IWAE_K, K in {1, 10, 100}."
)
@click.option(
    "--bound-words", type=int, default=256, show_default=True, help="Words drawn from p(w) for the bounds."
)
@click.option(
    "--noise/--no-noise",
    default=True,
    show_default=True,
    help="DSSM: per-step entropy and noise MI, with a plot.",
)
@click.option(
    "--noise-samples",
    type=int,
    default=100,
    show_default=True,
    help="Outer and inner draws of the MI estimator.",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal].")
@json_option
@handle_errors
def evaluate_command(
    run_dir: str, samples: int, estimator: str | None, bounds: bool, bound_words: int, noise: bool,
    noise_samples: int, device: str, seed: int, progress: bool | None, as_json: bool,
) -> None:  # fmt: skip
    """Measure a trained run: cross-entropy against p(w), KL, vocabulary mass, bounds, noise usage
    (word task); NLL, perplexity, bits per character, accuracy on the test split (text)."""
    for name, value in (
        ("--samples", samples),
        ("--bound-words", bound_words),
        ("--noise-samples", noise_samples),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    show = progress if progress is not None else sys.stderr.isatty()
    torch.manual_seed(seed)
    run = load_run(run_dir, device=device)
    corpus = run.corpus()
    result: dict[str, Any] = {"run_dir": str(run.path), "model": run.config.model, "step": run.step}
    lines = [f"run {run.path} ({run.config.model}, step {run.step})"]
    with torch.no_grad():
        if isinstance(corpus, WordCorpus):
            result.update(_word_task(run, corpus, estimator, samples, show))
            lines += [
                f"  estimator: {result['estimator']} (K={result['samples']}), {result['cpu_seconds']:.1f} CPU s",
                f"  CE   {result['ce_nats']:.4f} ± {result['ce_stderr']:.4f} nats/word   H(p) {result['entropy_nats']:.4f}",
                f"  KL   {result['kl_nats']:.4f} nats/word   vocabulary mass {result['vocab_mass']:.4f}",
            ]
            if not run.model.autoregressive and bounds:
                batch = corpus.draw_batch(bound_words, seed=seed, device=device)
                result["bounds"] = elbo_and_iwae(run.model, run.guide, batch.ids, batch.mask, ks=(1, 10, 100))
                b = result["bounds"]
                lines.append(
                    "  bounds (nats/word): "
                    + "  ".join(
                        f"{k} {v:.3f}" for k, v in b.items() if isinstance(v, float) and "stderr" not in k
                    )
                )
            if not run.model.autoregressive and noise:
                usage = noise_usage(
                    run.model,
                    length=corpus.max_length,
                    num_outer=noise_samples,
                    num_inner=noise_samples,
                    progress=show,
                )
                plot = plot_noise_usage(usage, run.path / "noise_usage.png")
                mi = usage.mutual_information.mean(dim=1)
                ent = usage.entropy.mean(dim=1)
                result["noise"] = {
                    "mutual_information_nats": mi.tolist(),
                    "mutual_information_quartiles": usage.mutual_information.quantile(
                        torch.tensor([0.25, 0.5, 0.75], dtype=usage.mutual_information.dtype), dim=1
                    ).T.tolist(),
                    "entropy_nats": ent.tolist(),
                    "plot": str(plot),
                }
                lines.append("  MI per step (nats): " + " ".join(f"{v:.3f}" for v in mi.tolist()))
                lines.append(f"  noise plot: {plot}")
        else:
            if run.model.autoregressive and estimator not in (None, "exact"):
                raise ConfigError(
                    f"--estimator {estimator}: an autoregressive model's test NLL is exact; use exact"
                )
            if not run.model.autoregressive and estimator not in (None, "iwae"):
                raise ConfigError(
                    f"--estimator {estimator}: a DSSM's text NLL is an IWAE bound with its guide; use iwae"
                )
            chunks = corpus.chunks("test", run.config.chunk_length).to(device)
            if run.model.autoregressive:
                result.update(evaluate_text(run.model, chunks, progress=show))
            else:
                result.update(
                    evaluate_text_latent(run.model, run.guide, chunks, num_samples=samples, progress=show)
                )
            lines.append(f"  test: NLL {result['nll_nats']:.4f} nats/symbol, perplexity {result['perplexity']:.3f}, "
                         f"BPC {result['bpc']:.4f}, accuracy {result['accuracy']}")  # fmt: skip
    emit(result, as_json, lines)
