"""Tests of pyroseq.evaluate against small models whose q(w) is known exactly.

* :class:`MarkovModel`: a second-order Markov chain (autoregressive), q(w) by a direct product.
* :class:`RandomWalkModel`: a Gaussian random walk in one dimension with a linear emission (state space);
  q(w) by quadrature (a forward recursion on a fine grid, exact to far below the Monte Carlo errors).
  With a zero emission weight the emission ignores the state and q(w) = prod_t pi(w_t) in closed form.

Statistical checks use tolerances of 4 reported standard errors and fixed seeds.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.conditional import ConditionalTransformModule

from pyroseq.data.batch import pad_batch
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate import (
    WORD_ESTIMATORS,
    NoiseActivity,
    NoiseUsage,
    PrefixTree,
    WordEstimator,
    WordLogProbs,
    elbo_and_iwae,
    evaluate_text,
    exact_word_log_probs,
    guide_word_log_probs,
    log_weights,
    noise_activity,
    noise_usage,
    plot_noise_usage,
    prior_word_log_probs,
    text_metrics,
    token_log_probs,
    word_log_probs,
    word_metrics,
)
from pyroseq.flows.trajectory import StateTrajectory
from pyroseq.models.base import AutoregressiveModel, StateSpaceModel, mask_special_logits
from pyroseq.models.dssm import DSSM
from pyroseq.plates import plate_batch_shape

BOS, EOS = Vocabulary.bos_id, Vocabulary.eos_id
LETTER_A, LETTER_B = 3, 4  # the two letters of the toy alphabet
V = 5


def all_words(max_letters: int, letters: tuple[int, ...] = (LETTER_A, LETTER_B)) -> list[list[int]]:
    """Every word of 0..max_letters letters, followed by EOS."""
    return [list(w) + [EOS] for n in range(max_letters + 1) for w in itertools.product(letters, repeat=n)]


class MarkovModel(AutoregressiveModel):
    """q(w_t | w_{t-2}, w_{t-1}) from a fixed random table; the state ``(B, 1)`` holds w_{t-1}."""

    def __init__(self, *, seed: int = 0, eos_bias: float = 0.0, vocab_size: int = V) -> None:
        super().__init__(vocab_size=vocab_size)
        g = torch.Generator().manual_seed(seed)
        table = 1.5 * torch.randn(vocab_size, vocab_size, vocab_size, generator=g)
        table[..., EOS] += eos_bias
        self.register_buffer("table", mask_special_logits(table))  # (V, V, V)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.full((batch_size, 1), float(BOS))

    def step(self, state: torch.Tensor, prev_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table[state[:, 0].long(), prev_ids], prev_ids.float()[:, None]

    def next_log_probs(self, context: list[int]) -> torch.Tensor:
        """``log q(. | context)`` by direct lookup, context without BOS."""
        padded = [BOS, BOS] + context
        return torch.log_softmax(self.table[padded[-2], padded[-1]].double(), dim=-1)

    def exact_log_prob(self, word: list[int]) -> float:
        return sum(float(self.next_log_probs(word[:t])[s]) for t, s in enumerate(word))


class RandomWalkModel(StateSpaceModel):
    """h_t ~ N(h_{t-1}, scale^2 I), p(w_t | h_t) = softmax(weight h_t + bias)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, scale: float = 1.0) -> None:
        super().__init__(vocab_size=weight.shape[0])
        self.state_dim = weight.shape[1]
        self.scale = scale
        self.register_buffer("weight", weight)  # (V, D)
        self.register_buffer("bias", bias)  # (V,)

    def initial_state(self, batch_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(*batch_shape, self.state_dim)

    def transition(self, h_prev: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(h_prev, self.scale).to_event(1)

    def emission_logits(self, h: torch.Tensor) -> torch.Tensor:
        return mask_special_logits(h @ self.weight.T + self.bias)

    def latent_shapes(self, mask: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """One site per step (not the DSSM's one trajectory site ``h``)."""
        return {f"h_{t}": (mask.shape[0], self.state_dim) for t in range(1, mask.shape[1] + 1)}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        B, T = mask.shape
        h = self.initial_state((B,))
        with pyro.plate("seqs", B, dim=-1):
            for t in range(1, T + 1):
                m = mask[:, t - 1]
                h = pyro.sample(f"h_{t}", self.transition(h).mask(m))
                pyro.sample(
                    f"w_{t}", dist.Categorical(logits=self.emission_logits(h)).mask(m), obs=ids[:, t - 1]
                )


def random_walk(slope: float = 2.0) -> RandomWalkModel:
    """The state picks between a and b; EOS has probability about 0.4 near h = 0."""
    weight = torch.tensor([[0.0], [0.0], [0.0], [slope], [-slope]])
    return RandomWalkModel(weight, torch.tensor([0.0, 0.0, 0.3, 0.0, 0.0]))


def length_walk() -> RandomWalkModel:
    """The state sets the probability of EOS, so one trajectory raises or lowers every word's weight alike."""
    return RandomWalkModel(torch.tensor([[0.0], [0.0], [2.0], [0.0], [0.0]]), torch.zeros(5))


def shifted_guide(model: RandomWalkModel, *, shift: float = 0.3, widen: float = 1.3):
    """q(h_t | h_{t-1}, w_t) = N(h_{t-1} + shift [w_t = a], (widen scale)^2): data-dependent, not exact."""

    def guide(ids: torch.Tensor, mask: torch.Tensor) -> None:
        B, T = mask.shape
        h = model.initial_state((B,))
        with pyro.plate("seqs", B, dim=-1):
            for t in range(1, T + 1):
                loc = h + shift * (ids[:, t - 1] == LETTER_A).float()[:, None]
                q = dist.Normal(loc, widen * model.scale).to_event(1)
                h = pyro.sample(f"h_{t}", q.mask(mask[:, t - 1]))

    return guide


def quadrature_log_q(model: RandomWalkModel, words: list[list[int]]) -> list[float]:
    """log q(w) of a one-dimensional random-walk model by the forward recursion on a grid."""
    grid = torch.linspace(-12.0, 12.0, 801, dtype=torch.float64)
    dx = float(grid[1] - grid[0])
    s = model.scale
    kernel = torch.exp(-0.5 * ((grid[:, None] - grid[None, :]) / s) ** 2) / (s * math.sqrt(2 * math.pi)) * dx
    probs = torch.softmax(model.emission_logits(grid[:, None].float()).double(), dim=-1)  # (G, V)
    out = []
    for word in words:
        alpha = kernel[:, grid.abs().argmin()] * probs[:, word[0]]  # h_0 = 0
        for w in word[1:]:
            alpha = (kernel @ alpha) * probs[:, w]
        out.append(float(alpha.sum().log()))
    return out


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()


# ---------------------------------------------------------------------------------------------- trie


def test_trie_nodes_are_the_distinct_prefixes():
    words = [[3, 4, 2], [3, 4, 3, 2], [3, 2], [4, 2], [3, 4, 2], [4, 4, 4, 4, 2]]
    tree = PrefixTree.from_sequences(words)
    prefixes = {tuple(w[:n]) for w in words for n in range(len(w) + 1)}
    assert tree.num_nodes == len(prefixes)
    assert {tuple(tree.sequence(n)) for n in range(tree.num_nodes)} == prefixes
    assert [tree.sequence(int(n)) for n in tree.word_end] == words
    assert tree.word_end[0] == tree.word_end[4]  # duplicates share their end node
    assert torch.equal(tree.depth[tree.parent[1:]], tree.depth[1:] - 1)
    assert sorted(torch.cat(tree.levels).tolist()) == list(range(tree.num_nodes))
    assert all(bool((tree.depth[level] == d).all()) for d, level in enumerate(tree.levels))
    assert tree.is_leaf[tree.word_end].all() and not tree.is_leaf[0]
    assert tree.max_depth == 5


def test_trie_rejects_empty_input():
    with pytest.raises(DataError):
        PrefixTree.from_sequences([])
    with pytest.raises(DataError):
        PrefixTree.from_sequences([[3, 2], []])


# ------------------------------------------------------------------------------------ exact scoring


def test_exact_trie_scoring_equals_log_prob_on_padded_batches():
    model = MarkovModel(seed=1, eos_bias=-0.5)
    g = torch.Generator().manual_seed(0)
    words = [
        torch.randint(3, 5, (int(n),), generator=g).tolist() + [EOS]
        for n in torch.randint(0, 7, (60,), generator=g)
    ]
    estimate = exact_word_log_probs(model, words, batch_size=3)
    batch = pad_batch(words)
    assert torch.allclose(estimate.log_q, model.log_prob(batch.ids, batch.mask).double(), atol=1e-5)
    closed_form = torch.tensor([model.exact_log_prob(w) for w in words], dtype=torch.float64)
    assert torch.allclose(estimate.log_q, closed_form, atol=1e-5)
    assert estimate.estimator == "exact" and estimate.log_weights is None


def test_word_checks():
    model = MarkovModel()
    with pytest.raises(DataError, match="does not end in EOS"):
        exact_word_log_probs(model, [[3, 4]])
    with pytest.raises(DataError, match="before its end"):
        exact_word_log_probs(model, [[3, EOS, 4, EOS]])
    with pytest.raises(ConfigError):
        prior_word_log_probs(random_walk(), [[3, EOS]], num_samples=0)


# ------------------------------------------------------------------------------------------ metrics


def test_word_metrics_of_exact_estimate():
    model = MarkovModel(seed=2)
    words = all_words(3)
    p = np.random.default_rng(0).dirichlet(np.ones(len(words)))
    est = exact_word_log_probs(model, words)
    m = word_metrics(est, 10 * p)  # counts work too: p is normalised
    ce = -float((torch.as_tensor(p) * est.log_q).sum())
    h = -float((p * np.log(p)).sum())
    assert m["ce_nats"] == pytest.approx(ce) and m["entropy_nats"] == pytest.approx(h)
    assert m["kl_nats"] == pytest.approx(ce - h) and m["kl_nats"] > 0
    assert m["ce_stderr"] == 0 and m["vocab_mass_stderr"] == 0
    assert (m["estimator"], m["samples"]) == ("exact", 0)
    assert set(m) == {
        "ce_nats",
        "ce_stderr",
        "entropy_nats",
        "kl_nats",
        "vocab_mass",
        "vocab_mass_stderr",
        "estimator",
        "samples",
        "repeats",
        "jackknife",
    }
    with pytest.raises(DataError):
        word_metrics(est, p[:-1])
    with pytest.raises(DataError):
        word_metrics(est, -p)


def _survival_mass(model: MarkovModel, max_steps: int) -> float:
    """P(EOS within max_steps) of a Markov model, by dynamic programming over contexts."""
    contexts = {(): 1.0}
    ended = 0.0
    for _ in range(max_steps):
        following: dict[tuple[int, ...], float] = {}
        for ctx, mass in contexts.items():
            probs = model.next_log_probs(list(ctx)).exp()
            ended += mass * float(probs[EOS])
            for s in (LETTER_A, LETTER_B):
                key = (ctx + (s,))[-2:]
                following[key] = following.get(key, 0.0) + mass * float(probs[s])
        contexts = following
    return ended


def test_enumeration_mass_autoregressive():
    """Over all words of <= 4 letters over {a, b} (V has no other letters), the mass is P(EOS by step 5)."""
    model = MarkovModel(seed=3)
    words = all_words(4)
    m = word_metrics(exact_word_log_probs(model, words), np.ones(len(words)))
    assert m["vocab_mass"] == pytest.approx(_survival_mass(model, 5), abs=1e-6)
    assert m["vocab_mass"] <= 1.0


def test_enumeration_mass_state_space():
    model = random_walk()
    words = all_words(3)
    est = prior_word_log_probs(model, words, num_samples=2000, chunk_size=300, progress=False)
    m = word_metrics(est, np.ones(len(words)))
    exact = sum(math.exp(lq) for lq in quadrature_log_q(model, words))
    assert exact < 1.0
    assert abs(m["vocab_mass"] - exact) < 4 * m["vocab_mass_stderr"]
    # Given one trajectory, distinct words are disjoint events: their probabilities sum to at most 1.
    assert (torch.logsumexp(est.log_weights, dim=1) <= 1e-6).all()
    assert m["vocab_mass"] <= 1.0


# ------------------------------------------------------------------------------------- estimators


def _per_word_checks(est: WordLogProbs, exact: list[float]) -> None:
    """Each word's estimate agrees with the exact value within 4 of its own standard errors."""
    for i, log_q in enumerate(exact):
        one_hot = np.zeros(len(exact))
        one_hot[i] = 1.0
        m = word_metrics(est, one_hot)
        assert abs(m["ce_nats"] + log_q) < 4 * m["ce_stderr"], (i, m, log_q)


def test_prior_estimator_agrees_with_quadrature():
    model = random_walk()
    words = all_words(3)
    exact = quadrature_log_q(model, words)
    p = np.random.default_rng(1).dirichlet(np.ones(len(words)))
    est = prior_word_log_probs(model, words, num_samples=3000, chunk_size=700, progress=False)
    assert est.log_weights.shape == (3000, len(words)) and est.shared
    m = word_metrics(est, p)
    assert abs(m["ce_nats"] + float(np.dot(p, exact))) < 4 * m["ce_stderr"]
    assert 0 < m["ce_stderr"] < 0.05
    _per_word_checks(est, exact)


def test_guide_estimator_agrees_with_quadrature_and_prior_estimator():
    model = random_walk()
    words = all_words(3)
    exact = quadrature_log_q(model, words)
    p = np.random.default_rng(2).dirichlet(np.ones(len(words)))
    guide = shifted_guide(model)
    iwae = guide_word_log_probs(
        model, guide, words, num_samples=600, batch_size=4, particle_chunk=250, progress=False
    )
    assert iwae.log_weights.shape == (600, len(words)) and not iwae.shared
    m_iwae = word_metrics(iwae, p)
    assert abs(m_iwae["ce_nats"] + float(np.dot(p, exact))) < 4 * m_iwae["ce_stderr"]
    _per_word_checks(iwae, exact)
    m_prior = word_metrics(
        prior_word_log_probs(model, words, num_samples=2000, progress=False),
        p,
    )
    joint = math.hypot(m_iwae["ce_stderr"], m_prior["ce_stderr"])
    assert abs(m_iwae["ce_nats"] - m_prior["ce_nats"]) < 4 * joint


def test_estimators_are_exact_when_the_emission_ignores_the_state():
    """q(w) = prod_t pi(w_t): every prior weight equals q(w); guide weights average to it."""
    model = random_walk(slope=0.0)
    words = all_words(3)
    pi = torch.log_softmax(model.emission_logits(torch.zeros(1)).double(), dim=-1)
    closed = torch.tensor([float(pi[w].sum()) for w in words], dtype=torch.float64)
    prior = prior_word_log_probs(model, words, num_samples=50, progress=False)
    assert torch.allclose(prior.log_q, closed, atol=1e-5)
    assert word_metrics(prior, np.ones(len(words)))["ce_stderr"] < 1e-6
    iwae = guide_word_log_probs(model, shifted_guide(model), words, num_samples=500, progress=False)
    m = word_metrics(iwae, np.ones(len(words)))
    assert abs(m["ce_nats"] + float(closed.mean())) < 4 * m["ce_stderr"]


def test_guide_estimator_pads_each_batch_to_its_own_longest_word():
    """Words are batched by length (each batch as wide as its longest word) and scored in their order."""
    model = random_walk(slope=0.0)
    words = all_words(4)[::-1]  # longest first, so that sorting by length matters
    words = words[1::2] + words[::2]  # and mixed
    pi = torch.log_softmax(model.emission_logits(torch.zeros(1)).double(), dim=-1)
    closed = torch.tensor([float(pi[w].sum()) for w in words], dtype=torch.float64)
    prior_guide = shifted_guide(model, shift=0.0, widen=1.0)  # the guide is the prior: every weight is q(w)
    widths = []

    def guide(ids: torch.Tensor, mask: torch.Tensor) -> None:
        widths.append(ids.shape[1])
        prior_guide(ids, mask)

    est = guide_word_log_probs(model, guide, words, num_samples=3, batch_size=8, progress=False)
    torch.testing.assert_close(est.log_q, closed, atol=1e-5, rtol=0)
    lengths = sorted(len(w) for w in words)
    assert widths == [max(lengths[i : i + 8]) for i in range(0, len(words), 8)]
    assert sum(widths) < len(widths) * max(lengths)


def test_word_log_probs_defaults_to_exact_or_the_guide_iwae_and_refuses_what_does_not_apply():
    words = all_words(2)
    walk, markov = random_walk(), MarkovModel()
    guide = shifted_guide(walk)
    assert word_log_probs(markov, None, words).estimator == "exact"
    torch.manual_seed(0)
    default = word_log_probs(walk, guide, words, num_samples=7)
    torch.manual_seed(0)
    iwae = guide_word_log_probs(walk, guide, words, num_samples=7, progress=False)
    assert (default.estimator, default.num_samples) == ("iwae", 7)
    torch.testing.assert_close(default.log_q, iwae.log_q, rtol=0, atol=0)
    assert word_log_probs(walk, guide, words, estimator="prior", num_samples=7).estimator == "prior"
    with pytest.raises(
        ConfigError,
        match="^estimator exact: a state-space model's log q.w. has no closed form; use iwae or prior or smc",
    ):
        word_log_probs(walk, guide, words, estimator="exact")
    with pytest.raises(
        ConfigError, match="^estimator prior: an autoregressive model's log q.w. is exact; use exact"
    ):
        word_log_probs(markov, None, words, estimator="prior")
    with pytest.raises(ConfigError, match="unknown estimator 'bogus'"):
        word_log_probs(walk, guide, words, estimator="bogus")
    smc = word_log_probs(walk, guide, words, estimator="smc", num_samples=7, num_repeats=3)
    assert (smc.estimator, smc.num_samples, smc.repeats) == ("smc", 7, 3)
    assert word_log_probs(walk, guide, words, estimator="smc", num_repeats=None).repeats == 4
    with pytest.raises(ConfigError, match="num_repeats applies to the smc estimator, not prior"):
        word_log_probs(walk, guide, words, estimator="prior", num_repeats=3)


def test_a_new_word_estimator_is_one_registration(monkeypatch):
    def halve(model, guide, words, num_samples, progress):
        exact = exact_word_log_probs(model, words)
        return WordLogProbs(exact.log_q - math.log(2), "halved", 0)

    monkeypatch.setitem(WORD_ESTIMATORS, "halved", WordEstimator(halve, latent=False))
    model, words = MarkovModel(), all_words(2)
    estimate = word_log_probs(model, None, words, estimator="halved")
    assert estimate.estimator == "halved"
    assert word_metrics(estimate, np.ones(len(words)))["estimator"] == "halved"


@pytest.mark.parametrize("estimator", ["prior", "iwae"])
def test_reported_stderr_matches_spread_over_repeats(estimator):
    """The delta-method standard error is the actual spread of the CE estimate (within sampling error).

    Under ``length_walk`` the words' prior weights are strongly correlated: ignoring that would
    understate the prior estimator's standard error by a factor of about 2.8.
    """
    model = length_walk()
    words = all_words(3)
    p = np.ones(len(words))
    guide = shifted_guide(model)
    ces, stderrs, masses, mass_stderrs = [], [], [], []
    for _ in range(40):
        if estimator == "prior":
            est = prior_word_log_probs(model, words, num_samples=200, progress=False)
        else:
            est = guide_word_log_probs(model, guide, words, num_samples=100, progress=False)
        m = word_metrics(est, p)
        ces.append(m["ce_nats"])
        stderrs.append(m["ce_stderr"])
        masses.append(m["vocab_mass"])
        mass_stderrs.append(m["vocab_mass_stderr"])
    ratio = float(np.std(ces, ddof=1) / np.mean(stderrs))
    assert 0.65 < ratio < 1.5, ratio
    # the vocabulary mass's error the same way (an error off by sqrt(K) is a ratio of 10 or more)
    ratio = float(np.std(masses, ddof=1) / np.mean(mass_stderrs))
    assert 0.65 < ratio < 1.5, ratio


# ------------------------------------------------------------------------------------------ bounds


def test_log_weights_respect_masks():
    """Emission ignoring h and guide = prior: every weight is exactly q(w), padding notwithstanding."""
    model = random_walk(slope=0.0)
    words = [[LETTER_A, EOS], [LETTER_A, LETTER_B, LETTER_B, EOS], [EOS]]
    batch = pad_batch(words, max_length=6)
    lw = log_weights(
        model, shifted_guide(model, shift=0.0, widen=1.0), batch.ids, batch.mask, num_particles=7
    )
    pi = torch.log_softmax(model.emission_logits(torch.zeros(1)), dim=-1)
    closed = torch.stack([pi[w].sum() for w in words]).double()
    assert lw.shape == (7, 3)
    assert torch.allclose(lw, closed.expand(7, 3), atol=1e-5)


def test_log_weights_reject_sites_outside_the_sequence_plate():
    # One latent shared by the whole batch: the weights would make one joint bound, not one per sequence.
    def joint_model(ids: torch.Tensor, mask: torch.Tensor) -> None:
        shared = pyro.sample("shared", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        with pyro.plate("seqs", ids.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(shared[..., 0], 1.0), obs=torch.zeros(ids.shape[0]))

    def joint_guide(ids: torch.Tensor, mask: torch.Tensor) -> None:
        pyro.sample("shared", dist.Normal(torch.zeros(1), 1.0).to_event(1))

    batch = pad_batch([[LETTER_A, EOS], [LETTER_B, EOS]])
    with pytest.raises(ConfigError, match="outside the plate 'seqs'"):
        log_weights(joint_model, joint_guide, batch.ids, batch.mask, num_particles=3)


def test_log_weights_accumulate_in_float64():
    """A float64 site's log-density reaches the weights unrounded."""
    obs = torch.tensor([1.0 / 3.0, 2.0 / 7.0], dtype=torch.float64)

    def model(ids: torch.Tensor, mask: torch.Tensor) -> None:
        with pyro.plate("seqs", 2, dim=-1):
            pyro.sample("x", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0), obs=obs)

    batch = pad_batch([[LETTER_A, EOS], [LETTER_B, EOS]])
    lw = log_weights(model, lambda ids, mask: None, batch.ids, batch.mask, num_particles=3)
    assert lw.dtype == torch.float64
    exact = -0.5 * obs**2 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(lw, exact.expand(3, 2), atol=1e-14, rtol=0)


def test_bound_stderrs_match_the_spread_over_repeats():
    """Over repeated evaluations of one batch the bounds spread as their reported standard errors say.

    The batch repeats one word, so std_b / sqrt(B) is pure Monte Carlo error, which repeats measure.
    With 40 repeats the ratio of spread to reported error has a relative sampling error of about 11%;
    an error off by sqrt(B) = 8, or one taken over the particles instead of the sequences, is far out.
    """
    model = random_walk()
    batch = pad_batch([[LETTER_A, LETTER_A, LETTER_B, EOS]] * 64, max_length=5)
    runs = [elbo_and_iwae(model, shifted_guide(model), batch.ids, batch.mask, ks=(1, 10)) for _ in range(40)]
    for name in ("elbo", "iwae_10"):
        ratio = float(np.std([r[name] for r in runs], ddof=1) / np.mean([r[f"{name}_stderr"] for r in runs]))
        assert 0.65 < ratio < 1.5, (name, ratio)


def test_elbo_iwae_ordering_and_tightness():
    model = random_walk()
    word = [LETTER_A, LETTER_A, LETTER_B, EOS]
    batch = pad_batch([word] * 64, max_length=5)  # one word repeated: the stderr is pure Monte Carlo
    (exact,) = quadrature_log_q(model, [word])
    out = elbo_and_iwae(model, shifted_guide(model), batch.ids, batch.mask, ks=(1, 10, 100))
    assert out["num_sequences"] == 64 and out["num_particles"] == 100 and out["num_tokens"] == 256
    assert out["elbo"] <= out["iwae_10"] <= out["iwae_100"]
    assert out["iwae_100"] < exact + 4 * out["iwae_100_stderr"]
    assert abs(out["iwae_100"] - exact) < 4 * out["iwae_100_stderr"] + 0.02
    assert out["elbo"] < exact - 4 * out["elbo_stderr"]  # the guide is not the posterior
    with pytest.raises(ConfigError):
        elbo_and_iwae(model, shifted_guide(model), batch.ids, batch.mask, ks=(0, 10))
    with pytest.raises(ConfigError):
        elbo_and_iwae(model, shifted_guide(model), batch.ids, batch.mask, ks=())
    single = elbo_and_iwae(model, shifted_guide(model), batch.ids, batch.mask, ks=(10,))  # one K is enough
    assert "iwae_10" in single and "elbo" not in single and single["num_particles"] == 10


# -------------------------------------------------------------------------------------------- noise


def _mutual_information_at_step_1(model: RandomWalkModel) -> float:
    """I(h_1; w_1) of a one-dimensional model by quadrature."""
    grid = torch.linspace(-10.0, 10.0, 4001, dtype=torch.float64)
    density = torch.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi) * float(grid[1] - grid[0])
    log_p = torch.log_softmax(model.emission_logits(grid[:, None].float()).double(), dim=-1)
    p = log_p.exp()
    each = -torch.where(p > 0, p * log_p, 0.0).sum(-1)
    mix = (density[:, None] * p).sum(0)
    return float(-torch.special.xlogy(mix, mix).sum() - (density * each).sum())


def test_noise_usage_zero_when_emission_ignores_state(tmp_path):
    model = random_walk(slope=0.0)
    result = noise_usage(model, length=4, num_outer=6, num_inner=20, chunk_size=4, progress=False)
    assert result.mutual_information.shape == (4, 6) and result.entropy.shape == (4, 6)
    pi = torch.softmax(model.emission_logits(torch.zeros(1)).double(), dim=-1)
    entropy = float(-torch.special.xlogy(pi, pi).sum())
    assert result.mutual_information.abs().max() < 1e-5
    assert torch.allclose(result.entropy, torch.full((4, 6), entropy, dtype=torch.float64), atol=1e-5)
    path = plot_noise_usage(result, tmp_path / "noise.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noise_usage_positive_when_emission_uses_state(tmp_path):
    model = random_walk()
    result = noise_usage(model, length=3, num_outer=20, num_inner=1000, progress=False)
    assert (result.mean_mutual_information > 0.1).all()
    assert (result.mutual_information > -1e-6).all()
    assert result.mean_mutual_information[0] == pytest.approx(_mutual_information_at_step_1(model), abs=0.01)
    summary = result.to_dict()
    assert summary["num_outer"] == 20 and len(summary["mutual_information_nats"]) == 3
    quartiles = torch.tensor(summary["mutual_information_quartiles"])  # (T, 3)
    assert quartiles.shape == (3, 3) and (quartiles.diff(dim=1) >= 0).all()
    assert (quartiles[:, 0] >= result.mutual_information.min(dim=1).values).all()
    assert plot_noise_usage(result, tmp_path / "noise.png").stat().st_size > 0
    with pytest.raises(ConfigError):
        noise_usage(model, length=0)


def test_noise_usage_stderrs_match_the_spread_over_repeats():
    """The per-step MI and entropy errors are the spread of their means over repeated estimates.

    30 repeats give the ratio a relative sampling error of about 13%; an error off by sqrt(N) = 4.5, or one
    taken from the inner draws, is far out.
    """
    model = random_walk()
    runs = [
        noise_usage(model, length=3, num_outer=20, num_inner=50, progress=False).to_dict() for _ in range(30)
    ]
    for name in ("mutual_information", "entropy"):
        means = np.array([r[f"{name}_nats"] for r in runs])  # (repeats, T)
        stderrs = np.array([r[f"{name}_stderr"] for r in runs])
        ratio = means.std(axis=0, ddof=1) / stderrs.mean(axis=0)
        assert ((0.6 < ratio) & (ratio < 1.6)).all(), (name, ratio)


# ----------------------------------------------------------------------------------- noise activity


class _Walk(ConditionalTransformModule):
    """The transition flow ``h_t = h_{t-1} + 2 xi_t``: its noise is ``(h_t - h_{t-1}) / 2``."""

    def condition(self, context: torch.Tensor) -> dist.transforms.Transform:
        return dist.transforms.AffineTransform(context, 2.0, event_dim=1)


def _walk_dssm(state_dim: int = 3) -> DSSM:
    return DSSM(vocab_size=V, state_dim=state_dim, flow=_Walk(), emitter_hidden=None)


def _known_noise_guide(*, padded: float = 0.0):
    """A guide whose noise under :func:`_walk_dssm` is known: ``xi_{t,0} = w_t`` (the symbol id, a function
    of the data), ``xi_{t,d} ~ N(0, 1)`` for d > 0 (the same for every sequence), and ``padded`` times
    the sequence's index at padded steps (data-dependent, so that counting them would show)."""

    def guide(ids: torch.Tensor, mask: torch.Tensor) -> None:
        B, T = mask.shape
        with pyro.plate("seqs", B, dim=-1):
            eps = pyro.sample("eps", dist.Normal(0.0, 1.0).expand([B, T, 3]).to_event(2))  # (..., B, T, 3)
            symbol = ids.float().expand(eps.shape[:-1]).unsqueeze(-1)  # (..., B, T, 1)
            xi = torch.cat([symbol, eps[..., 1:]], dim=-1)
            index = torch.arange(B, dtype=xi.dtype)[:, None, None]  # (B, 1, 1)
            xi = torch.where(mask[..., None], xi, padded * index)
            pyro.sample("h", dist.Delta(2 * xi.cumsum(-2), event_dim=2))  # h_0 = 0

    return guide


def _prior_guide(model: DSSM):
    """A guide that ignores the data: it draws the states from the model's own prior."""

    def guide(ids: torch.Tensor, mask: torch.Tensor) -> None:
        with pyro.plate("seqs", mask.shape[0], dim=-1):
            h_0 = model.initial_state(plate_batch_shape())
            step = lambda h_prev, steps: model.transition(h_prev)  # noqa: E731
            pyro.sample("h", StateTrajectory(step, h_0, mask))

    return guide


ACTIVITY_WORDS = all_words(4) * 10  # 310 words of 1 to 5 symbols


def test_noise_activity_is_zero_when_the_guide_ignores_the_data():
    """States drawn from the prior carry nothing about the words: every dimension's activity is 0 up to
    Monte Carlo noise (sd about sqrt(2 / n) / K = 0.002 to 0.0035 per step here), though the sample
    variance of the K-draw posterior means alone would be 1 / K = 0.03 (the bias the estimator removes)."""
    model = DSSM(vocab_size=V, state_dim=3, flow="coupling", flow_hidden=8)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    batch = pad_batch(ACTIVITY_WORDS)
    result = noise_activity(model, _prior_guide(model), batch.ids, batch.mask, num_samples=32)
    assert isinstance(result, NoiseActivity) and result.activity.shape == (5, 3)
    assert result.activity.abs().max() < 0.02
    assert result.dimension_activity.abs().max() < 0.005
    assert result.num_active == 0 and not result.active.any()
    torch.testing.assert_close(
        result.posterior_variance, torch.ones(5, 3, dtype=torch.float64), atol=0.08, rtol=0
    )


def _running_variance(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The unbiased variance over sequences of ``values (B, T)`` at each step, real steps only, ``(T,)``."""
    return torch.stack([values[mask[:, t], t].double().var() for t in range(mask.shape[1])])


def test_noise_activity_finds_the_one_dimension_that_carries_the_data():
    """xi_{t,0} is the symbol w_t: its activity is exactly the variance of w_t over the running words
    (no posterior variance to remove); the other two dimensions are inactive."""
    batch = pad_batch(ACTIVITY_WORDS)
    result = noise_activity(_walk_dssm(), _known_noise_guide(), batch.ids, batch.mask, num_samples=32)
    expected = _running_variance(batch.ids, batch.mask)  # (T,)
    torch.testing.assert_close(result.activity[:, 0], expected, atol=1e-5, rtol=0)
    assert result.posterior_variance[:, 0].abs().max() < 1e-8
    assert result.activity[:, 1:].abs().max() < 0.02
    counts = batch.mask.sum(0).double()
    summary = (counts * expected).sum() / counts.sum()  # steps weighted by the running words
    assert float(result.dimension_activity[0]) == pytest.approx(float(summary), abs=1e-5)
    assert result.num_active == 1 and result.active.tolist() == [True, False, False]
    report = result.to_dict()
    assert report["num_active"] == 1 and report["state_dim"] == 3 and report["num_sequences"] == 310
    assert report["activity"][0][0] == pytest.approx(float(expected[0]), abs=1e-5)


def test_noise_activity_never_counts_padded_steps():
    """Padded steps whose noise differs wildly between words change nothing, and a step no word reaches
    has no activity (NaN, weight 0 in the summary)."""
    words = pad_batch(ACTIVITY_WORDS)
    longer = pad_batch(ACTIVITY_WORDS, max_length=7)  # two steps past every word's end
    model = _walk_dssm()
    tidy = noise_activity(model, _known_noise_guide(), words.ids, words.mask, num_samples=4)
    wild = noise_activity(model, _known_noise_guide(padded=1e3), longer.ids, longer.mask, num_samples=4)
    assert wild.running.tolist() == longer.mask.sum(0).tolist() == [310, 300, 280, 240, 160, 0, 0]
    torch.testing.assert_close(wild.activity[:5, 0], tidy.activity[:, 0], atol=1e-5, rtol=0)
    assert wild.activity[5:].isnan().all() and wild.posterior_variance[5:].isnan().all()
    assert wild.dimension_activity[0] == pytest.approx(float(tidy.dimension_activity[0]), abs=1e-5)
    assert wild.to_dict()["activity"][6] == [None, None, None]


def test_noise_activity_takes_a_pyro_autoguide_and_refuses_what_it_cannot_read():
    model = _walk_dssm()
    batch = pad_batch(ACTIVITY_WORDS[:20])
    result = noise_activity(model, pyro.infer.autoguide.AutoNormal(model), batch.ids, batch.mask)
    assert result.activity.shape == (5, 3) and result.activity[:4].isfinite().all()
    with pytest.raises(ConfigError, match=r"^num_samples must be an integer of at least 2, got 1"):
        noise_activity(model, _known_noise_guide(), batch.ids, batch.mask, num_samples=1)
    with pytest.raises(ConfigError, match="has no site 'h'"):
        noise_activity(model, lambda ids, mask: None, batch.ids, batch.mask)
    with pytest.raises(
        ConfigError,
        match=r"\(16, 20, 5, 4\) under K vectorised particles; the guide has a site 'h' of shape "
        r"\(16, 20, 5, 3\)",
    ):
        noise_activity(_walk_dssm(state_dim=4), _known_noise_guide(), batch.ids, batch.mask)


def test_noise_activity_takes_what_the_model_takes_and_refuses_what_it_cannot_measure():
    """A 0/1 integer mask and a numpy integer K are accepted (the model's own checks convert them); one
    sequence (no variance across sequences), a threshold that is no threshold, 1-D inputs and a model
    without noise are refused by name."""
    from pyroseq.guides import empty_guide
    from pyroseq.models.rnn import RNNLM

    model, guide = _walk_dssm(), _known_noise_guide()
    batch = pad_batch(ACTIVITY_WORDS[:20])
    torch.manual_seed(0)
    as_bool = noise_activity(model, guide, batch.ids, batch.mask, num_samples=4)
    torch.manual_seed(0)
    as_ints = noise_activity(model, guide, batch.ids, batch.mask.long(), num_samples=np.int64(4))
    torch.testing.assert_close(as_ints.activity, as_bool.activity)
    assert as_ints.num_samples == 4 and type(as_ints.num_samples) is int
    with pytest.raises(DataError, match=r"^DSSM: mask must be a \(B, T\) tensor, got \(5,\)"):
        noise_activity(model, guide, batch.ids[0], batch.mask[0])
    with pytest.raises(
        DataError,
        match="^noise_activity needs at least 2 sequences, got 1: the activity is a variance across",
    ):
        noise_activity(model, guide, batch.ids[:1], batch.mask[:1])
    for threshold in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"^threshold must be a finite number >= 0, got"):
            noise_activity(model, guide, batch.ids, batch.mask, threshold=threshold)
    no_noise = r"^noise_activity measures the noise of a state-space model \(a DSSM\), but this RNNLM has no"
    with pytest.raises(ConfigError, match=no_noise):
        noise_activity(RNNLM(vocab_size=V, state_dim=3), empty_guide, batch.ids, batch.mask)


# --------------------------------------------------------------------------------------------- text


def test_text_metrics_hand_computed():
    log_probs = torch.tensor([[0.5, 0.25], [0.125, 1.0]]).log()
    correct = torch.tensor([[True, False], [True, True]])
    mask = torch.tensor([[True, True], [True, False]])
    m = text_metrics(log_probs, correct, mask)
    # NLL = (ln 2 + 2 ln 2 + 3 ln 2) / 3 = 2 ln 2
    assert m["nll_nats"] == pytest.approx(2 * math.log(2))
    assert m["bpc"] == pytest.approx(2.0) and m["bpc"] == pytest.approx(m["nll_nats"] / math.log(2))
    assert m["perplexity"] == pytest.approx(4.0) and m["perplexity"] == pytest.approx(math.exp(m["nll_nats"]))
    assert m["accuracy"] == pytest.approx(2 / 3) and m["tokens"] == 3
    with pytest.raises(DataError):
        text_metrics(log_probs, correct, torch.zeros_like(mask))


def test_evaluate_text_on_markov_model():
    model = MarkovModel(seed=4)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 5, (7, 9), generator=g)
    batch = pad_batch(ids.tolist())
    log_probs, correct = token_log_probs(model, batch.ids)
    expected_lp, expected_ok = [], []
    for row in ids.tolist():
        for t, s in enumerate(row):
            lp = model.next_log_probs(row[:t])
            expected_lp.append(float(lp[s]))
            expected_ok.append(int(lp.argmax()) == s)
    assert torch.allclose(
        log_probs.flatten().double(), torch.tensor(expected_lp, dtype=torch.float64), atol=1e-5
    )
    assert correct.flatten().tolist() == expected_ok
    m = evaluate_text(model, batch, batch_size=3, progress=False)
    assert m["nll_nats"] == pytest.approx(-np.mean(expected_lp), abs=1e-6)
    assert m["accuracy"] == pytest.approx(np.mean(expected_ok))
    assert m["tokens"] == 63


@pytest.mark.parametrize("num_samples", [1, 7])
def test_latent_text_nll_of_a_known_model(num_samples):
    """Emission ignoring the state and the guide equal to the prior: every log-weight is log q(chunk)
    exactly, so the IWAE estimate, (logsumexp of K equal weights) - log K, is exact for every K."""
    from pyroseq.evaluate import evaluate_text_latent

    model = random_walk(slope=0.0)
    chunks = [[LETTER_A, LETTER_B, LETTER_A], [LETTER_B, EOS], [EOS, LETTER_A, LETTER_A]]  # padded: a word
    batch = pad_batch(chunks)
    pi = torch.log_softmax(model.emission_logits(torch.zeros(1)), dim=-1).double()
    nll = -sum(float(pi[c].sum()) for c in chunks) / 8
    guide = shifted_guide(model, shift=0.0, widen=1.0)
    m = evaluate_text_latent(model, guide, batch, num_samples=num_samples, batch_size=2, progress=False)
    assert m["tokens"] == 8 and m["samples"] == num_samples
    assert m["nll_nats"] == pytest.approx(nll, abs=1e-6)
    assert m["bpc"] == pytest.approx(nll / math.log(2), abs=1e-6)


# ----------------------------------------------------------------------------------------- helpers


def test_mask_special_logits():
    logits = torch.randn(3, 2, V, requires_grad=True)
    masked = mask_special_logits(logits)
    special = [Vocabulary.pad_id, Vocabulary.bos_id]
    others = [i for i in range(V) if i not in special]
    assert (masked[..., special] == float("-inf")).all()
    assert torch.equal(masked[..., others], logits[..., others])
    assert torch.isfinite(logits).all(), "the input is left alone"
    torch.log_softmax(masked, dim=-1)[..., others].sum().backward()
    assert (logits.grad[..., special] == 0).all() and torch.isfinite(logits.grad).all()


def test_importing_the_package_leaves_matplotlib_out():
    """Every CLI command imports pyroseq.evaluate; matplotlib (about 0.3 s) is loaded only to plot."""
    code = (
        "import sys, pyroseq.cli.main, pyroseq.evaluate; "
        "sys.exit(any(m.split('.')[0] == 'matplotlib' for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("sizes", [{"batch_size": 0}, {"num_samples": 0}, {"particle_chunk": 0}])
def test_guide_estimator_refuses_non_positive_sizes_with_a_config_error(sizes):
    model = random_walk()
    kwargs = {"num_samples": 2, **sizes}
    with pytest.raises(ConfigError, match=f"{next(iter(sizes))} must be a positive integer"):
        guide_word_log_probs(model, shifted_guide(model), all_words(1), progress=False, **kwargs)


def test_noise_usage_summaries_are_weighted_by_the_probability_of_still_running():
    mi = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)  # one step, four prefixes
    usage = NoiseUsage(mi, mi + 10, torch.tensor([[0.0, 1.0, 1.0, 2.0]], dtype=torch.float64), num_inner=1)
    assert usage.mean_mutual_information.tolist() == pytest.approx([(2 + 3 + 2 * 4) / 4])
    assert usage.mean_entropy.tolist() == pytest.approx([10 + 13 / 4])
    # Weights 0, 1/4, 1/4, 1/2: the weighted CDF is 0, 1/4, 1/2, 1 at the values 1, 2, 3, 4.
    assert usage.quantiles(mi, (0.1, 0.3, 0.6, 1.0)).tolist() == [[2.0, 3.0, 4.0, 4.0]]
    summary = usage.to_dict()
    assert summary["running_probability"] == pytest.approx([1.0])
    weights = torch.tensor([0.0, 0.25, 0.25, 0.5], dtype=torch.float64)
    spread = (weights**2 * (mi[0] - 13 / 4) ** 2).sum() * 4 / 3
    assert summary["mutual_information_stderr"] == pytest.approx([float(spread.sqrt())])


def _conditioned_mi_at_step_2(model: RandomWalkModel) -> tuple[float, float]:
    """I(h_2; w_2 | h_1) of a one-dimensional model by quadrature, averaged over h_1 ~ N(0, 1) with and
    without the weight 1 - p(EOS | h_1) (the word still running at step 2)."""
    grid = torch.linspace(-8.0, 8.0, 801, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    log_p = torch.log_softmax(model.emission_logits(grid[:, None].float()).double(), dim=-1)  # (G, V)
    p = log_p.exp()
    each = -torch.where(p > 0, p * log_p, 0.0).sum(-1)  # (G,) H(p(w | h))
    kernel = (
        torch.exp(-0.5 * (grid[None, :] - grid[:, None]) ** 2) / math.sqrt(2 * math.pi) * step
    )  # (h_1, h_2)
    mix = kernel @ p  # (G, V): E[p(w_2 | h_2) | h_1]
    mi = -torch.special.xlogy(mix, mix).sum(-1) - kernel @ each  # (G,) per-prefix MI
    prior = torch.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi) * step
    running = prior * (1 - p[:, EOS])
    return float((running * mi).sum() / running.sum()), float((prior * mi).sum())


def test_noise_usage_is_conditioned_on_the_word_still_running():
    # EOS grows likelier with h: prefixes whose word has ended sit where the MI is lower than where
    # running words are (0.234 nats over all prefixes, 0.276 over running ones).
    weight, bias = torch.tensor([[0.0], [0.0], [2.0], [1.0], [-1.0]]), torch.tensor([0.0, 0, 2, 0, 0])
    model = RandomWalkModel(weight, bias)
    conditioned, unconditioned = _conditioned_mi_at_step_2(model)
    assert abs(conditioned - unconditioned) > 0.04
    torch.manual_seed(0)
    usage = noise_usage(model, length=2, num_outer=4000, num_inner=400, chunk_size=500, progress=False)
    summary = usage.to_dict()
    assert summary["mutual_information_nats"][1] == pytest.approx(conditioned, abs=0.012)
    assert 3 * summary["mutual_information_stderr"][1] < 0.012
