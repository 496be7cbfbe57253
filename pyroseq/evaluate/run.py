"""Everything ``pyroseq evaluate`` measures of a trained run, as one library call.

:func:`evaluate_run` loads the run, reloads its corpus (checked against the run's fingerprint) and
composes the measurements: on the word task ``log q(w)`` of every word by the chosen estimator and the
metrics against p(w), and for a state-space model the ELBO / IWAE_K bounds, the noise usage (with its
plot beside the run) and, when asked, the activity of each noise dimension under the guide; on running
text the test split's NLL, perplexity, bits per character and accuracy; on
polyphonic music the test split's NLL per frame (from the ELBO and IWAE_K, with standard errors) and, as a
secondary figure, the accuracy and F1 of the most likely next frame.
The command line prints what it returns; benchmarks call it instead of the command.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pyroseq.data.polyphonic import PolyphonicCorpus
from pyroseq.data.words import WordCorpus
from pyroseq.errors import ConfigError
from pyroseq.evaluate.bounds import elbo_and_iwae
from pyroseq.evaluate.frames import frame_nll, frame_prediction
from pyroseq.evaluate.noise import noise_activity, noise_usage, plot_noise_usage
from pyroseq.evaluate.text import text_scores
from pyroseq.evaluate.words import word_log_probs, word_metrics
from pyroseq.models.base import StateSpaceModel
from pyroseq.runs.rundir import LoadedRun, load_run

__all__ = ["evaluate_run", "BOUND_KS", "NOISE_PLOT", "FRAME_ROWS", "ACTIVITY_WORDS"]

BOUND_KS = (1, 10, 100)  # the bounds reported: the ELBO and IWAE_K
NOISE_PLOT = "noise_usage.png"  # the noise-usage plot, written into the run directory
FRAME_ROWS = 2048  # sequences x particles scored in one call on frames
ACTIVITY_WORDS = 1000  # words drawn from p(w) for the activity of the noise dimensions


def evaluate_run(
    run_dir: str | Path,
    *,
    num_samples: int = 100,
    num_repeats: int | None = None,
    jackknife: bool | None = None,
    estimator: str | None = None,
    bounds: bool = True,
    bound_words: int = 256,
    bound_ks: Sequence[int] = BOUND_KS,
    noise: bool = True,
    noise_samples: int = 100,
    activity: bool = False,
    activity_words: int = ACTIVITY_WORDS,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Measure the run in ``run_dir``: what ``pyroseq evaluate --json`` prints, as a dict.

    Seeds torch's global generator with ``seed`` first, so that the figures are reproducible.

    Args:
        run_dir: a run directory (or its checkpoint file).
        num_samples: K, the trajectories or particles of a sampling estimator (on frames: the IWAE_K
            bound's particles, and the particle filter's that predicts the next frame).
        num_repeats: the smc estimator's R independent filter runs (default 4); words only.
        jackknife: correct the smc estimate's log-mean bias with the jackknife over the R runs; words only.
        estimator: a key of :data:`~pyroseq.evaluate.WORD_ESTIMATORS` (on text: ``"exact"`` or
            ``"iwae"``), or None for the model's default.
        bounds: a state-space model's ELBO and IWAE_K bounds on ``bound_words`` words drawn from p(w).
        bound_words: how many words the bounds are averaged over.
        bound_ks: the K of each bound (1 is the ELBO).
        noise: a state-space model's per-step entropy and noise MI, with a plot in the run directory.
        noise_samples: the outer and inner draws of the MI estimator (at least 2).
        activity: a state-space model's active noise dimensions (:func:`~pyroseq.evaluate.noise_activity`)
            on ``activity_words`` words drawn from p(w); words and state-space models only.
        activity_words: how many words the activity is measured on (at least 2: it is a variance across
            them).
        device: where the model runs.
        seed: the seed of the draws.
        progress: show progress bars.

    Returns:
        ``{"run_dir", "model", "step", ...}``: on the word task the fields of
        :func:`~pyroseq.evaluate.word_metrics` and ``cpu_seconds`` (the estimator's CPU time), with
        ``"bounds"`` (:func:`~pyroseq.evaluate.elbo_and_iwae`) and ``"noise"``
        (:meth:`~pyroseq.evaluate.NoiseUsage.to_dict` and ``"plot"``, its path) for a state-space model, and
        ``"activity"`` (:meth:`~pyroseq.evaluate.NoiseActivity.to_dict`) when asked;
        on running text those of :func:`~pyroseq.evaluate.text_scores`; on polyphonic music those of
        :func:`~pyroseq.evaluate.frame_nll` on the test split (for an autoregressive model ``nll_elbo`` is
        the exact NLL per frame, and K is 1) and ``"prediction"``
        (:func:`~pyroseq.evaluate.frames.frame_prediction`).

    Raises:
        ConfigError: ``num_repeats`` or ``jackknife`` given for a run on running text, ``activity`` for a run
            that is not on the word task or whose model has no noise (an RNN), or an estimator that does not
            apply.
        CheckpointError: the run cannot be loaded, or its corpus changed since it was trained.

    Examples:
        >>> result = evaluate_run("runs/dssm", num_samples=10, noise=False)  # doctest: +SKIP
        >>> result["ce_nats"], result["bounds"]["elbo"]  # doctest: +SKIP
    """
    torch.manual_seed(seed)
    run = load_run(run_dir, device=device)
    corpus = run.corpus()
    result: dict[str, Any] = {"run_dir": str(run.path), "model": run.config.model, "step": run.step}
    if activity and not isinstance(corpus, WordCorpus):
        raise ConfigError(
            "activity: the noise dimensions' activity is measured on words drawn from p(w), on the word "
            "task only; drop it for this run",
            params=("activity",),
        )
    if activity and not isinstance(run.model, StateSpaceModel):
        raise ConfigError(
            f"activity: this {type(run.model).__name__} has no noise (its state is a function of the symbols "
            "it reads): the activity of noise dimensions is measured for a state-space model; drop it for "
            "this run",
            params=("activity",),
        )
    with torch.no_grad():
        if isinstance(corpus, PolyphonicCorpus):
            if num_repeats is not None or jackknife is not None or estimator is not None:
                raise ConfigError(
                    "num_repeats, jackknife, estimator: a run on frames is scored by its bounds per frame "
                    "(the ELBO and IWAE_K); they are for words and text: drop them",
                    params=("num_repeats", "jackknife", "estimator"),
                )
            k = 1 if run.model.autoregressive else num_samples
            per_call = max(1, FRAME_ROWS // k)
            nll = frame_nll(
                run.model, run.guide, corpus.test.batches(per_call, device=device), num_particles=k
            )
            prediction = frame_prediction(
                run.model, corpus.test.batches(per_call, device=device), num_particles=num_samples
            )
            return {**result, **nll, "prediction": prediction}
        if not isinstance(corpus, WordCorpus):
            if num_repeats is not None or jackknife is not None:
                raise ConfigError(
                    "num_repeats, jackknife: running text has no smc estimator (it is for words); drop them",
                    params=("num_repeats", "jackknife"),
                )
            chunks = corpus.chunks("test", run.config.chunk_length).to(device)
            scores = text_scores(
                run.model, run.guide, chunks, estimator=estimator, num_samples=num_samples, progress=progress
            )
            return {**result, **scores}
        began = time.process_time()
        estimate = word_log_probs(
            run.model, run.guide, corpus.encode(), estimator=estimator, num_samples=num_samples,
            progress=progress, num_repeats=num_repeats, jackknife=jackknife,
        )  # fmt: skip
        result.update(word_metrics(estimate, corpus.probs), cpu_seconds=time.process_time() - began)
        if not run.model.autoregressive and bounds:
            batch = corpus.draw_batch(bound_words, seed=seed, device=device)
            result["bounds"] = elbo_and_iwae(run.model, run.guide, batch.ids, batch.mask, ks=bound_ks)
        if not run.model.autoregressive and noise:
            result["noise"] = _noise(run, corpus.max_length, noise_samples, progress)
        if not run.model.autoregressive and activity:
            batch = corpus.draw_batch(activity_words, seed=seed, device=device)
            result["activity"] = noise_activity(run.model, run.guide, batch.ids, batch.mask).to_dict()
    return result


def _noise(run: LoadedRun, length: int, samples: int, progress: bool) -> dict[str, Any]:
    usage = noise_usage(run.model, length=length, num_outer=samples, num_inner=samples, progress=progress)
    plot = plot_noise_usage(usage, run.path / NOISE_PLOT)
    return {**usage.to_dict(), "plot": str(plot)}
