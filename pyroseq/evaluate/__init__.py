"""Evaluation: word-level log q(w) estimators and metrics, bounds, running-text metrics, noise usage and the
activity of each noise dimension, the NLL per frame of sequences of frames, and :func:`evaluate_run`, all that
``pyroseq evaluate`` measures of a run.

See ``docs/evaluation.md`` for the definition, bias and standard error of every estimator.
"""

from pyroseq.data.trie import PrefixTree
from pyroseq.evaluate.bounds import elbo_and_iwae, log_weights
from pyroseq.evaluate.frames import frame_nll
from pyroseq.evaluate.noise import (
    ACTIVE_THRESHOLD,
    NoiseActivity,
    NoiseUsage,
    noise_activity,
    noise_usage,
    plot_noise_usage,
)
from pyroseq.evaluate.run import BOUND_KS, evaluate_run
from pyroseq.evaluate.text import (
    evaluate_text,
    evaluate_text_latent,
    text_metrics,
    text_scores,
    token_log_probs,
)
from pyroseq.evaluate.words import (
    WORD_ESTIMATORS,
    WordEstimator,
    WordLogProbs,
    exact_word_log_probs,
    guide_word_log_probs,
    jackknife_log_mean,
    prior_word_log_probs,
    smc_word_log_probs,
    word_log_probs,
    word_metrics,
)
from pyroseq.infer.smc import prefix_tree_log_evidence
from pyroseq.moved import alias_modules

__all__ = [
    "evaluate_run",
    "BOUND_KS",
    "PrefixTree",
    "WordLogProbs",
    "WORD_ESTIMATORS",
    "WordEstimator",
    "word_log_probs",
    "exact_word_log_probs",
    "prior_word_log_probs",
    "guide_word_log_probs",
    "smc_word_log_probs",
    "jackknife_log_mean",
    "prefix_tree_log_evidence",
    "word_metrics",
    "log_weights",
    "elbo_and_iwae",
    "frame_nll",
    "token_log_probs",
    "text_metrics",
    "evaluate_text",
    "evaluate_text_latent",
    "text_scores",
    "NoiseUsage",
    "noise_usage",
    "plot_noise_usage",
    "NoiseActivity",
    "noise_activity",
    "ACTIVE_THRESHOLD",
]

# The filter down the prefix tree is the particle filter's (pyroseq.infer.smc), its estimator is one of the
# others (pyroseq.evaluate.words), the tree a data structure (pyroseq.data.trie).
alias_modules({"pyroseq.evaluate.smc": "pyroseq.infer.smc", "pyroseq.evaluate.trie": "pyroseq.data.trie"})
