"""Tests of pyroseq.complete: completions follow the model's conditional law q(. | prefix).

Three models whose law is known: a state-space model fit exactly to a few words (q(w) = p(w)), the random
walk of test_evaluate (q by quadrature) and its Markov chain (exact). Chi-square tests at fixed seeds.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import pyro.distributions as dist
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import chisquare
from test_evaluate import EOS, LETTER_A, LETTER_B, MarkovModel, quadrature_log_q, random_walk

from pyroseq.cli.common import CORES
from pyroseq.cli.main import cli
from pyroseq.complete import complete
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError
from pyroseq.models.base import StateSpaceModel
from pyroseq.runs.config import RunConfig
from pyroseq.runs.train import train_run

WORDS = {"the": 0.3, "then": 0.2, "they": 0.15, "this": 0.05, "a": 0.3}


class WordListModel(StateSpaceModel):
    """A state-space model fit exactly to a few words with known p(w): q(w) = p(w) on them, 0 elsewhere.

    The state is ``(u, t)``: ``u ~ N(0, 1)`` drawn at the first step and then kept (up to 1e-6 noise),
    ``t`` counts the steps. Word j owns the quantiles ``Phi(u)`` in ``[P_{j-1}, P_j)`` of the cumulative
    probabilities; the emission spells word j's symbol at step t with probability 1.
    """

    def __init__(self, vocab: Vocabulary, words: dict[str, float]) -> None:
        super().__init__(vocab_size=len(vocab))
        self.state_dim = 2
        ids = [vocab.encode(w) for w in words]
        longest = max(len(w) for w in ids)
        table = torch.full((len(ids), longest), EOS, dtype=torch.long)
        for j, w in enumerate(ids):
            table[j, : len(w)] = torch.tensor(w)
        self.register_buffer("table", table)  # (J, L)
        probs = torch.tensor(list(words.values()), dtype=torch.float64)
        self.register_buffer("edges", probs.cumsum(0)[:-1])  # (J - 1,)

    def initial_state(self, batch_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(*batch_shape, 2)

    def transition(self, h_prev: torch.Tensor) -> dist.TorchDistribution:
        first = h_prev[..., 1] < 0.5
        scale = torch.stack([torch.where(first, 1.0, 1e-6), torch.full_like(h_prev[..., 1], 1e-6)], -1)
        return dist.Normal(h_prev + torch.tensor([0.0, 1.0]), scale).to_event(1)

    def emission_logits(self, h: torch.Tensor) -> torch.Tensor:
        word = torch.bucketize(torch.special.ndtr(h[..., 0].double()), self.edges, right=True)
        step = (h[..., 1].round().long() - 1).clamp(0, self.table.shape[1] - 1)
        symbol = self.table[word, step]  # (...,)
        logits = torch.full((*h.shape[:-1], self.vocab_size), -math.inf)
        return logits.scatter(-1, symbol[..., None], 0.0)


def chi_square_p_value(sequences: list[list[int]], expected: dict[tuple[int, ...], float]) -> float:
    """p-value of the counts of ``sequences`` against the probabilities ``expected`` (which sum to 1)."""
    counts = Counter(tuple(s) for s in sequences)
    assert set(counts) <= set(expected), set(counts) - set(expected)
    keys = sorted(expected)
    n = len(sequences)
    return float(chisquare([counts[k] for k in keys], [n * expected[k] for k in keys]).pvalue)


def test_completions_of_a_model_fit_to_a_few_words_follow_p_of_w_given_the_prefix():
    vocab = Vocabulary.from_texts(WORDS)
    model = WordListModel(vocab, WORDS)
    prefix = vocab.encode("th", add_eos=False)
    out = complete(model, prefix, num_samples=3000, max_length=6, num_particles=2000, seed=0)
    assert all(s[: len(prefix)] == prefix for s in out.sequences)
    given = {w: p for w, p in WORDS.items() if w.startswith("th")}
    total = sum(given.values())
    expected = {tuple(vocab.encode(w)): p / total for w, p in given.items()}
    assert chi_square_p_value(out.sequences, expected) > 1e-3
    assert out.log_evidence == pytest.approx(math.log(total), abs=0.05)
    assert len(out.ess) == 2 and out.num_particles == 2000
    for s, lp in zip(out.sequences, out.log_probs, strict=True):
        assert lp == pytest.approx(math.log(expected[tuple(s)]), abs=0.15)


def test_completions_of_a_random_walk_follow_its_conditional_law():
    """A continuous state whose filter weights matter: q(. | prefix) by quadrature, cut ones included."""
    model = random_walk()
    prefix, max_length = [LETTER_A, LETTER_A], 4
    tails = [[EOS]] + [[x, EOS] for x in (LETTER_A, LETTER_B)]
    tails += [list(xy) for xy in itertools.product((LETTER_A, LETTER_B), repeat=2)]
    sequences = [prefix + t for t in tails]
    log_prefix = quadrature_log_q(model, [prefix])[0]
    expected = {
        tuple(s): math.exp(lq - log_prefix)
        for s, lq in zip(sequences, quadrature_log_q(model, sequences), strict=True)
    }
    assert sum(expected.values()) == pytest.approx(1.0, abs=1e-6)
    out = complete(model, prefix, num_samples=4000, max_length=max_length, num_particles=2000, seed=1)
    assert chi_square_p_value(out.sequences, expected) > 1e-3
    assert out.log_evidence == pytest.approx(log_prefix, abs=0.05)
    for s, lp in zip(out.sequences[:50], out.log_probs[:50], strict=True):
        assert lp == pytest.approx(math.log(expected[tuple(s)]), abs=0.1)


def test_autoregressive_completions_feed_the_prefix_and_follow_its_conditional_law():
    model = MarkovModel(seed=4)
    prefix, max_length = [LETTER_B, LETTER_A], 4
    tails = [[EOS]] + [[x, EOS] for x in (LETTER_A, LETTER_B)]
    tails += [list(xy) for xy in itertools.product((LETTER_A, LETTER_B), repeat=2)]
    expected = {
        tuple(prefix + t): math.exp(model.exact_log_prob(prefix + t) - model.exact_log_prob(prefix))
        for t in tails
    }
    out = complete(model, prefix, num_samples=4000, max_length=max_length, seed=2)
    assert chi_square_p_value(out.sequences, expected) > 1e-3
    assert out.log_evidence == pytest.approx(model.exact_log_prob(prefix))
    assert (out.ess, out.num_particles) == ([], 0)
    for s, lp in zip(out.sequences, out.log_probs, strict=True):
        assert lp == pytest.approx(math.log(expected[tuple(s)]))


def test_empty_prefix_is_unconditional_sampling():
    vocab = Vocabulary.from_texts(WORDS)
    model = WordListModel(vocab, WORDS)
    out = complete(model, [], num_samples=3000, max_length=5, num_particles=500, seed=3)
    assert (out.log_evidence, out.ess) == (0.0, [])
    assert chi_square_p_value(out.sequences, {tuple(vocab.encode(w)): p for w, p in WORDS.items()}) > 1e-3


def test_greedy_completion_and_reproducible_seed():
    model = MarkovModel(seed=4)
    greedy = complete(model, [LETTER_A], num_samples=3, max_length=5, decoder="greedy")
    assert len({tuple(s) for s in greedy.sequences}) == 1
    a = complete(random_walk(), [LETTER_A], num_samples=5, max_length=5, num_particles=50, seed=7)
    b = complete(random_walk(), [LETTER_A], num_samples=5, max_length=5, num_particles=50, seed=7)
    assert a == b


def test_bad_input():
    walk, markov = random_walk(), MarkovModel()
    with pytest.raises(DataError, match="prefix symbol id 2"):
        complete(walk, [LETTER_A, EOS], num_samples=2, max_length=5)
    with pytest.raises(DataError, match="prefix symbol id 9"):
        complete(walk, [9], num_samples=2, max_length=5)
    with pytest.raises(DataError, match="max_length=3"):
        complete(walk, [LETTER_A] * 3, num_samples=2, max_length=3)
    with pytest.raises(ConfigError, match="num_samples"):
        complete(walk, [LETTER_A], num_samples=0, max_length=5)
    with pytest.raises(ConfigError, match="num_particles"):
        complete(walk, [LETTER_A], num_samples=2, max_length=5, num_particles=0)
    with pytest.raises(ConfigError, match="autoregressive model is fed"):
        complete(markov, [LETTER_A], num_samples=2, max_length=5, num_particles=10)
    with pytest.raises(ConfigError, match="beam"):
        complete(markov, [LETTER_A], num_samples=2, max_length=5, decoder="beam")
    vocab = Vocabulary.from_texts(WORDS)
    with pytest.raises(DataError, match="none of the 10 particles"):
        complete(
            WordListModel(vocab, WORDS),
            vocab.encode("ty", add_eos=False),
            num_samples=2,
            max_length=5,
            num_particles=10,
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny DSSM run and a tiny GRU run on the sample words."""
    root = tmp_path_factory.mktemp("runs")
    for model in ("dssm", "rnn"):
        config = RunConfig(model=model, source="sample", state_dim=4, embed_dim=4, flow_hidden=8,
                           emitter_hidden=8, guide_hidden=8, batch_size=8, steps=2, valid_size=8)  # fmt: skip
        train_run(config, root / model, progress=False)
    return root


@pytest.mark.parametrize("model, extra", [("dssm", ["--particles", "50"]), ("rnn", [])])
def test_complete_command(runs, model, extra):
    out = CliRunner().invoke(
        cli, ["complete", str(runs / model), "--prefix", "th", "-n", "6", *extra, "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert len(result["completions"]) == 6 and result["prefix"] == "th"
    assert all(c["text"].startswith("th") and 0 < c["weight"] <= 1 for c in result["completions"])
    assert len(result["ess"]) == (2 if model == "dssm" else 0)
    empty = CliRunner().invoke(cli, ["complete", str(runs / model), "--prefix", "", "-n", "3"])
    assert empty.exit_code == 0 and "completions of ''" in empty.output, empty.output


@pytest.mark.parametrize(
    "model, args, message",
    [
        ("dssm", ["--prefix", "th3"], "symbol '3' in 'th3' is not in the vocabulary"),
        ("dssm", ["--prefix", "th", "--max-length", "2"], "the prefix has 2 symbols"),
        ("dssm", ["--prefix", "th", "--particles", "0"], "'--particles': 0 is not in the range x>=1"),
        ("dssm", ["--prefix", "th", "-n", "0"], "'-n': 0 is not in the range x>=1"),
        ("rnn", ["--prefix", "th", "--particles", "10"], "num_particles applies to state-space models"),
    ],
)
def test_complete_command_bad_input(runs, model, args, message):
    out = CliRunner().invoke(cli, ["complete", str(runs / model), *args])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: ") and message in out.output and len(out.output.splitlines()) == 1


def test_evaluate_command_smc(runs):
    args = ["evaluate", str(runs / "dssm"), "--no-bounds", "--no-noise", "--json"]
    out = CliRunner().invoke(cli, [*args, "--estimator", "smc", "--samples", "20", "--repeats", "3"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert (result["estimator"], result["samples"], result["repeats"]) == ("smc", 20, 3)
    assert result["ce_nats"] > result["entropy_nats"] and result["ce_stderr"] > 0
    for bad, message in (
        (["--estimator", "prior", "--repeats", "3"], "num_repeats applies to the smc estimator, not prior"),
        (["--estimator", "smc", "--repeats", "0"], "Invalid value for '--repeats': 0 is not in the range"),
        (["--estimator", "smc", "--samples", "0"], "Invalid value for '--samples'"),
    ):
        out = CliRunner().invoke(cli, [*args, *bad])
        assert out.exit_code == 2 and out.output.startswith("error: " + message), out.output
    rnn = CliRunner().invoke(cli, ["evaluate", str(runs / "rnn"), "--estimator", "smc"])
    assert rnn.exit_code == 2 and "use exact" in rnn.output, rnn.output


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "dssm", "--estimator", "smc", "-k", "5", "--repeats", "2", "--no-bounds", "--no-noise"],
        ["complete", "dssm", "--prefix", "th", "-n", "2", "--particles", "5"],
        ["sample", "rnn", "-n", "2"],
    ],
)  # fmt: skip
def test_commands_set_the_torch_threads(runs, command, monkeypatch):
    """--threads N reaches torch.set_num_threads (default 1): torch's own default is every core, which on
    a shared machine multiplied the CPU time of `evaluate --estimator smc` by 5."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    name, model, *rest = command
    for given, expected in (([], 1), (["--threads", str(CORES)], CORES)):
        calls.clear()
        out = CliRunner().invoke(cli, [name, str(runs / model), *rest, *given])
        assert out.exit_code == 0, out.output
        assert calls == [expected]
    out = CliRunner().invoke(cli, [name, str(runs / model), *rest, "--threads", "0"])
    assert out.exit_code == 2 and out.output.startswith("error: Invalid value for '--threads'"), out.output
