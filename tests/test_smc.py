"""Tests of the particle filter (pyroseq.infer.smc) and the prefix-tree estimator (pyroseq.evaluate.words).

On the toy models of test_evaluate, whose q(w) is known by quadrature. Statistical checks use tolerances
of 4 reported standard errors and fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from test_evaluate import (
    EOS,
    LETTER_A,
    LETTER_B,
    _per_word_checks,
    all_words,
    length_walk,
    quadrature_log_q,
    random_walk,
)

from pyroseq.data.batch import pad_batch
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate import PrefixTree, word_metrics
from pyroseq.evaluate.words import jackknife_log_mean, smc_word_log_probs
from pyroseq.infer.smc import (
    effective_sample_size,
    filter_prefixes,
    prefix_tree_log_evidence,
    systematic_resample,
)


def test_systematic_resample_draws_each_particle_floor_or_ceil_of_its_share():
    log_w = torch.randn(4, 37, dtype=torch.float64) * 2
    share = torch.softmax(log_w, -1) * 37
    total = torch.zeros(4, 37, dtype=torch.float64)
    for _ in range(2000):
        index = systematic_resample(log_w)
        counts = torch.stack([torch.bincount(row, minlength=37) for row in index]).double()
        assert ((counts >= share.floor()) & (counts <= share.ceil())).all()
        total += counts
    # In expectation particle i is drawn N wbar_i times (each count is a two-point variable, sd <= 0.5).
    assert torch.allclose(total / 2000, share, atol=4 * 0.5 / math.sqrt(2000))


def test_effective_sample_size():
    assert float(effective_sample_size(torch.zeros(10))) == pytest.approx(10)
    assert float(effective_sample_size(torch.tensor([0.0, -math.inf, -math.inf]))) == pytest.approx(1)
    assert float(effective_sample_size(torch.log(torch.tensor([0.5, 0.25, 0.25])))) == pytest.approx(
        1 / 0.375
    )


def _mean_and_stderr_of_log_z(log_zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log of the mean of Z over independent runs ``(R, B)``, and its delta-method standard error."""
    R = log_zs.shape[0]
    log_mean = torch.logsumexp(log_zs, 0) - math.log(R)
    ratio = (log_zs - log_mean).exp()
    return log_mean, ratio.std(0) / math.sqrt(R)


@pytest.mark.parametrize("with_proposal", [False, True])
def test_filter_evidence_of_ragged_prefixes_agrees_with_quadrature(with_proposal):
    """Z is unbiased for q(prefix), with the transition as proposal or a shifted one with its weights."""
    model = random_walk()
    prefixes = [[LETTER_A, LETTER_A, LETTER_A, LETTER_A, LETTER_B], [LETTER_B], [LETTER_B, LETTER_B, EOS]]
    exact = torch.tensor(quadrature_log_q(model, prefixes), dtype=torch.float64)
    batch = pad_batch(prefixes)

    def proposal(h_prev: torch.Tensor, symbols: torch.Tensor, t: int) -> dist.TorchDistribution:
        shift = 0.4 * (symbols == LETTER_A).double() - 0.4 * (symbols == LETTER_B).double()  # (B,)
        return dist.Normal(h_prev + shift[:, None, None].to(h_prev.dtype), 1.3).to_event(1)

    runs = []
    for _ in range(40):
        particles, ess = filter_prefixes(
            model, batch.ids, batch.mask, num_particles=50, proposal=proposal if with_proposal else None
        )
        runs.append(particles.log_evidence)
    assert torch.isnan(ess[1, 1:]).all() and not torch.isnan(ess[0]).any()
    assert ((ess[0] >= 1) & (ess[0] <= 50)).all()
    log_mean, stderr = _mean_and_stderr_of_log_z(torch.stack(runs))
    assert ((log_mean - exact).abs() < 4 * stderr).all(), (log_mean, exact, stderr)
    assert (stderr < 0.1).all()


def test_tree_estimator_agrees_with_quadrature():
    model = random_walk()
    words = all_words(4)
    exact = quadrature_log_q(model, words)
    p = np.random.default_rng(3).dirichlet(np.ones(len(words)))
    est = smc_word_log_probs(model, words, num_particles=200, num_repeats=8, progress=False)
    assert (est.estimator, est.num_samples, est.repeats, est.shared) == ("smc", 200, 8, True)
    assert est.log_weights.shape == (8, len(words))
    m = word_metrics(est, p)
    assert (m["estimator"], m["samples"], m["repeats"]) == ("smc", 200, 8)
    assert abs(m["ce_nats"] + float(np.dot(p, exact))) < 4 * m["ce_stderr"]
    assert 0 < m["ce_stderr"] < 0.03
    _per_word_checks(est, exact)


def test_tree_estimator_is_exact_when_the_emission_ignores_the_state():
    model = random_walk(slope=0.0)
    words = all_words(3)
    pi = torch.log_softmax(model.emission_logits(torch.zeros(1)).double(), dim=-1)
    closed = torch.tensor([float(pi[w].sum()) for w in words], dtype=torch.float64)
    est = smc_word_log_probs(model, words, num_particles=7, num_repeats=3, ess_threshold=1.0, progress=False)
    torch.testing.assert_close(est.log_q, closed, atol=1e-5, rtol=0)


def test_tree_estimator_stderr_matches_spread_over_repeats():
    """The runs of one estimate give its standard error: it matches the spread of independent estimates.

    Under ``length_walk`` one filter's particles raise or lower every word's weight alike; treating the
    words as independent would understate the error.
    """
    model = length_walk()
    words = all_words(3)
    ces, stderrs = [], []
    for _ in range(40):
        m = word_metrics(
            smc_word_log_probs(model, words, num_particles=20, num_repeats=5, progress=False),
            np.ones(len(words)),
        )
        ces.append(m["ce_nats"])
        stderrs.append(m["ce_stderr"])
    ratio = float(np.std(ces, ddof=1) / np.mean(stderrs))
    assert 0.65 < ratio < 1.5, ratio


def test_tree_filter_moves_at_most_max_particle_rows_per_call():
    """Blocks of nodes bound memory; the estimate is the same estimator (agrees with quadrature)."""
    model = random_walk()
    words = all_words(4)
    exact = torch.tensor(quadrature_log_q(model, words), dtype=torch.float64)
    sizes = []
    transition = model.transition

    def recording(h_prev: torch.Tensor) -> dist.TorchDistribution:
        sizes.append(h_prev.shape[:-1].numel())
        return transition(h_prev)

    model.transition = recording
    tree = PrefixTree.from_sequences(words)
    runs = [
        prefix_tree_log_evidence(model, tree, num_particles=30, max_particle_rows=70, progress=False)[
            tree.word_end
        ]
        for _ in range(30)
    ]
    assert max(sizes) == 60  # two nodes of 30 particles
    internal = int((~tree.is_leaf).sum())
    assert sum(sizes) == 30 * 30 * internal  # one move per particle per internal node and run
    log_mean, stderr = _mean_and_stderr_of_log_z(torch.stack(runs))
    assert ((log_mean - exact).abs() < 4 * stderr).all()


def test_a_prefix_no_particle_can_emit_has_zero_estimate_below_it():
    model = random_walk()
    model.bias[LETTER_B] = -math.inf  # b is never emitted
    words = [[LETTER_A, EOS], [LETTER_B, EOS], [LETTER_B, LETTER_A, LETTER_A, EOS], [LETTER_A, LETTER_A, EOS]]
    est = smc_word_log_probs(model, words, num_particles=10, num_repeats=2, progress=False)
    assert torch.isfinite(est.log_q[[0, 3]]).all()
    assert (est.log_q[[1, 2]] == -math.inf).all()


def test_resampling_beats_shared_trajectories_on_long_words():
    """Without resampling (ess_threshold 0) the filter is the shared-trajectory estimator: on a long,
    unusual word its spread over runs is far larger than with resampling."""
    model = random_walk(slope=3.0)
    word = [[LETTER_A, LETTER_B] * 5 + [EOS]]
    spreads = {}
    for threshold in (0.0, 0.5):
        est = smc_word_log_probs(
            model, word, num_particles=100, num_repeats=30, ess_threshold=threshold, progress=False
        )
        spreads[threshold] = float(est.log_weights.std())
    assert spreads[0.5] < spreads[0.0] / 3, spreads


def test_bad_arguments():
    model = random_walk()
    words = all_words(2)
    with pytest.raises(ConfigError, match="num_particles"):
        smc_word_log_probs(model, words, num_particles=0, progress=False)
    with pytest.raises(ConfigError, match="num_repeats"):
        smc_word_log_probs(model, words, num_particles=5, num_repeats=0, progress=False)
    with pytest.raises(ConfigError, match="ess_threshold"):
        smc_word_log_probs(model, words, num_particles=5, ess_threshold=1.5, progress=False)
    with pytest.raises(DataError, match="EOS"):
        smc_word_log_probs(model, [[LETTER_A]], num_particles=5, progress=False)
    with pytest.raises(DataError, match="no words"):
        smc_word_log_probs(model, [], num_particles=5, progress=False)


def test_jackknife_removes_most_of_the_log_mean_bias():
    """At a small N x R the plain log-mean estimate of the CE sits clearly above the truth (the bias of a
    log of a mean); the jackknife over the R runs brings it back to within its noise."""
    model = random_walk()
    words = all_words(3)
    exact_ce = -float(np.mean(quadrature_log_q(model, words)))
    plain, corrected = [], []
    for _ in range(60):
        torch.manual_seed(len(plain))
        est = smc_word_log_probs(model, words, num_particles=8, num_repeats=2, progress=False)
        plain.append(-float(est.log_q.mean()))
        corrected.append(-float(jackknife_log_mean(est.log_weights).mean()))
    bias_plain, bias_jack = np.mean(plain) - exact_ce, np.mean(corrected) - exact_ce
    se_jack = np.std(corrected, ddof=1) / math.sqrt(len(corrected))
    assert bias_plain > 4 * np.std(plain, ddof=1) / math.sqrt(len(plain)), (bias_plain, exact_ce)
    assert abs(bias_jack) < 4 * se_jack and abs(bias_jack) < bias_plain / 3, (bias_jack, bias_plain)


def test_jackknife_log_mean_by_hand():
    z = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]], dtype=torch.float64).log()  # R = 3 runs, 2 words
    full = math.log(3.0)  # the mean of 1, 3, 5
    leave_one_out = np.log([4.0, 3.0, 2.0])  # the means of (3, 5), (1, 5), (1, 3)
    expected = [3 * full - 2 * leave_one_out.mean(), math.log(2.0)]  # equal runs: their common value
    torch.testing.assert_close(jackknife_log_mean(z), torch.tensor(expected, dtype=torch.float64))


def test_jackknife_option_and_its_fallbacks():
    model = random_walk()
    words = all_words(2)
    est = smc_word_log_probs(model, words, num_particles=4, num_repeats=3, jackknife=True, progress=False)
    assert est.jackknife and word_metrics(est, np.ones(len(words)))["jackknife"] is True
    torch.testing.assert_close(est.log_q, jackknife_log_mean(est.log_weights))
    with pytest.raises(ConfigError, match="at least 2 filter runs"):
        smc_word_log_probs(model, words, num_particles=4, num_repeats=1, jackknife=True, progress=False)
    # A run with Z = 0 for a word: its leave-one-out terms are not all finite, so the plain log-mean stays.
    log_z = torch.tensor([[0.0, -1.0], [-math.inf, -2.0], [0.5, -1.5]], dtype=torch.float64)
    out = jackknife_log_mean(log_z)
    assert float(out[0]) == pytest.approx(float(torch.logsumexp(log_z[:, 0], 0) - math.log(3)))
    assert math.isfinite(float(out[1])) and float(out[1]) != pytest.approx(
        float(torch.logsumexp(log_z[:, 1], 0) - math.log(3))
    )


def test_jackknife_is_an_smc_option_only():
    from pyroseq.evaluate.words import word_log_probs

    model = random_walk()
    with pytest.raises(ConfigError, match="jackknife applies to the smc estimator, not prior"):
        word_log_probs(model, None, all_words(2), estimator="prior", num_samples=4, jackknife=True)
