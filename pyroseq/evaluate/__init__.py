"""Evaluation: word-level log q(w) estimators and metrics, bounds, running-text metrics, noise usage, the
NLL per frame of sequences of frames.

See ``docs/evaluation.md`` for the definition, bias and standard error of every estimator.
"""

from pyroseq.evaluate.bounds import elbo_and_iwae, log_weights
from pyroseq.evaluate.frames import frame_nll
from pyroseq.evaluate.noise import NoiseUsage, noise_usage, plot_noise_usage
from pyroseq.evaluate.smc import prefix_tree_log_evidence, smc_word_log_probs
from pyroseq.evaluate.text import (
    evaluate_text,
    evaluate_text_latent,
    text_metrics,
    text_scores,
    token_log_probs,
)
from pyroseq.evaluate.trie import PrefixTree
from pyroseq.evaluate.words import (
    WORD_ESTIMATORS,
    WordEstimator,
    WordLogProbs,
    exact_word_log_probs,
    guide_word_log_probs,
    prior_word_log_probs,
    word_log_probs,
    word_metrics,
)

__all__ = [
    "PrefixTree",
    "WordLogProbs",
    "WORD_ESTIMATORS",
    "WordEstimator",
    "word_log_probs",
    "exact_word_log_probs",
    "prior_word_log_probs",
    "guide_word_log_probs",
    "smc_word_log_probs",
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
]
