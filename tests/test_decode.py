"""Tests of pyroseq.decode on the toy models of test_evaluate (a Markov chain and a random walk)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
from test_evaluate import BOS, EOS, LETTER_A, LETTER_B, MarkovModel, random_walk

from pyroseq.data.batch import pad_batch
from pyroseq.decode import DECODERS, decode
from pyroseq.errors import ConfigError


def greedy_by_hand(model: MarkovModel, max_length: int) -> tuple[list[int], float]:
    ids: list[int] = []
    score = 0.0
    while len(ids) < max_length and (not ids or ids[-1] != EOS):
        lp = model.next_log_probs(ids)
        ids.append(int(lp.argmax()))
        score += float(lp[ids[-1]])
    return ids, score


def all_hypotheses(max_length: int) -> list[list[int]]:
    """Every finished sequence of at most max_length symbols, and every unfinished one of exactly that."""
    letters = (LETTER_A, LETTER_B)
    finished = [list(w) + [EOS] for n in range(max_length) for w in itertools.product(letters, repeat=n)]
    return finished + [list(w) for w in itertools.product(letters, repeat=max_length)]


def log_probs(model: MarkovModel, seqs: list[list[int]]) -> list[float]:
    batch = pad_batch(seqs)
    return model.log_prob(batch.ids, batch.mask).tolist()


@pytest.fixture
def model() -> MarkovModel:
    return MarkovModel(seed=5, eos_bias=0.5)


def test_greedy_matches_hand_computation(model):
    out = decode(model, num=3, max_length=6, decoder="greedy")
    ids, score = greedy_by_hand(model, 6)
    assert [o[0] for o in out] == [ids] * 3
    assert out[0][1] == pytest.approx(score, abs=1e-6)


def test_sequences_stop_at_eos_and_scores_are_log_probs(model):
    out = decode(model, num=200, max_length=5, decoder="ancestral", seed=0)
    for ids, _ in out:
        assert 1 <= len(ids) <= 5
        assert EOS not in ids[:-1] and BOS not in ids
        assert ids[-1] == EOS or len(ids) == 5
    scores = torch.tensor([s for _, s in out])
    assert torch.allclose(scores, torch.tensor(log_probs(model, [ids for ids, _ in out])), atol=1e-5)


def test_ancestral_samples_follow_the_model(model):
    """Frequencies of the commonest words agree with q(w) within 4 binomial standard errors."""
    n = 4000
    counts = Counter(tuple(ids) for ids, _ in decode(model, num=n, max_length=12, seed=1))
    common = [list(w) for w, _ in counts.most_common(5)]
    for word, lq in zip(common, log_probs(model, common), strict=True):
        q = math.exp(lq)
        assert abs(counts[tuple(word)] / n - q) < 4 * math.sqrt(q * (1 - q) / n), word


def test_seed_reproducible_and_leaves_global_rng_alone(model):
    state = torch.get_rng_state()
    first = decode(model, num=20, max_length=8, decoder="nucleus", top_p=0.9, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert first == decode(model, num=20, max_length=8, decoder="nucleus", top_p=0.9, seed=3)
    g = torch.Generator().manual_seed(3)
    assert decode(model, num=20, max_length=8, generator=g) != decode(
        model, num=20, max_length=8, generator=g
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decoder": "ancestral", "temperature": 1e-4},
        {"decoder": "topk", "top_k": 1},
        {"decoder": "nucleus", "top_p": 1e-6},
        {"decoder": "beam", "beam_size": 1},
        {"decoder": "beam", "beam_size": 1, "beam_sampled": True, "temperature": 1e-4},
    ],
)
def test_limits_equal_greedy(model, kwargs):
    num = 1 if kwargs["decoder"] == "beam" else 10
    greedy = decode(model, num=num, max_length=7, decoder="greedy")
    out = decode(model, num=num, max_length=7, seed=0, **kwargs)
    assert [o[0] for o in out] == [g[0] for g in greedy]
    assert [o[1] for o in out] == pytest.approx([g[1] for g in greedy], abs=1e-6)


@pytest.mark.parametrize("decoder, kw", [("topk", {"top_k": 2}), ("nucleus", {"top_p": 0.6})])
def test_truncated_sampling_stays_in_its_set(model, decoder, kw):
    out = decode(model, num=300, max_length=6, decoder=decoder, seed=4, **kw)
    for ids, _ in out:
        for t, s in enumerate(ids):
            lp = model.next_log_probs(ids[:t])
            order = lp.argsort(descending=True).tolist()
            if decoder == "topk":
                allowed = order[:2]
            else:
                before = torch.cumsum(lp.exp()[order], 0) - lp.exp()[order]
                allowed = [v for v, b in zip(order, before.tolist(), strict=True) if b < 0.6]
            assert s in allowed


@pytest.mark.parametrize("length_normalise", [False, True])
def test_wide_beam_is_exhaustive_search(model, length_normalise):
    """A beam wider than the number of hypotheses returns the true best sequences, best first."""
    max_length = 4
    hyps = all_hypotheses(max_length)
    scores = log_probs(model, hyps)
    if length_normalise:
        scores = [s / len(h) for s, h in zip(scores, hyps, strict=True)]
    best = sorted(zip(scores, hyps, strict=True), reverse=True)[:6]
    out = decode(
        model, num=6, max_length=max_length, decoder="beam", beam_size=64, length_normalise=length_normalise
    )
    assert [o[0] for o in out] == [h for _, h in best]
    assert [o[1] for o in out] == pytest.approx([s for s, _ in best], abs=1e-5)


@pytest.mark.parametrize("sampled", [False, True])
def test_beam_returns_at_most_num(model, sampled):
    """With max_length 1 only [EOS], [a] and [b] exist: asking for five beams gives those three."""
    out = decode(model, num=5, max_length=1, decoder="beam", beam_sampled=sampled, seed=0)
    assert sorted(ids for ids, _ in out) == sorted([[EOS], [LETTER_A], [LETTER_B]])
    assert [score for _, score in out] == pytest.approx(
        sorted(log_probs(model, [ids for ids, _ in out]), reverse=True), abs=1e-5
    )


def reference_beam(model: MarkovModel, beam_size: int, max_length: int, normalise: bool) -> list:
    """Textbook beam search: the B best of (finished hypotheses + all one-symbol expansions), by key."""

    def key(ids: list[int], score: float) -> float:
        return score / len(ids) if normalise else score

    beam: list[tuple[list[int], float]] = [([], 0.0)]
    for _ in range(max_length):
        pool = []
        for ids, score in beam:
            if ids and ids[-1] == EOS:
                pool.append((ids, score))
                continue
            lp = model.next_log_probs(ids)
            pool += [(ids + [v], score + float(lp[v])) for v in (EOS, LETTER_A, LETTER_B)]
        beam = sorted(pool, key=lambda h: key(*h), reverse=True)[:beam_size]
        if all(ids[-1] == EOS for ids, _ in beam):
            break
    return [(ids, key(ids, score)) for ids, score in beam]


@pytest.mark.parametrize("beam_size", [2, 3, 5])
@pytest.mark.parametrize("length_normalise", [False, True])
def test_beam_matches_reference(beam_size, length_normalise):
    for seed in range(4):
        model = MarkovModel(seed=seed, eos_bias=-0.5)
        expected = reference_beam(model, beam_size, 8, length_normalise)
        out = decode(
            model,
            num=beam_size,
            max_length=8,
            decoder="beam",
            beam_size=beam_size,
            length_normalise=length_normalise,
        )
        assert [o[0] for o in out] == [e[0] for e in expected]
        assert [o[1] for o in out] == pytest.approx([e[1] for e in expected], abs=1e-5)


@pytest.mark.parametrize("sampled", [False, True])
def test_beams_in_non_increasing_score(model, sampled):
    out = decode(model, num=5, max_length=10, decoder="beam", beam_size=8, beam_sampled=sampled, seed=2)
    assert len(out) == 5 and len({tuple(ids) for ids, _ in out}) == 5
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    finished = [(ids, s) for ids, s in out if ids[-1] == EOS]
    assert [s for _, s in finished] == pytest.approx(log_probs(model, [ids for ids, _ in finished]), abs=1e-5)


def test_sampled_beam_varies_with_seed(model):
    """Two of the three possible continuations are drawn per beam, so the seed matters."""
    runs = [
        decode(model, num=2, max_length=8, decoder="beam", beam_size=2, beam_sampled=True, seed=s)
        for s in range(6)
    ]
    assert len({tuple(tuple(ids) for ids, _ in run) for run in runs}) > 1


def test_state_space_decoders_act_on_sampled_trajectories():
    model = random_walk()
    torch.manual_seed(7)
    h = model.sample_states(30, 6)
    expected = model.emission_logits(h).argmax(-1)  # (30, 6)
    greedy = decode(model, num=30, max_length=6, decoder="greedy", seed=7)
    for (ids, score), row, traj in zip(greedy, expected.tolist(), h, strict=True):
        end = row.index(EOS) + 1 if EOS in row else 6
        assert ids == row[:end]
        lp = torch.log_softmax(model.emission_logits(traj[:end]), -1)
        assert score == pytest.approx(float(lp[torch.arange(end), ids].sum()), abs=1e-5)
    for kwargs in (
        {"top_k": 1, "decoder": "topk"},
        {"top_p": 1e-6, "decoder": "nucleus"},
        {"temperature": 1e-4},
    ):
        decoded = decode(model, num=30, max_length=6, seed=7, **kwargs)
        assert [ids for ids, _ in decoded] == [ids for ids, _ in greedy]
        assert [score for _, score in decoded] == pytest.approx([score for _, score in greedy])


def test_state_space_beam_is_refused():
    with pytest.raises(ConfigError, match="nothing to search over"):
        decode(random_walk(), num=2, max_length=5, decoder="beam", beam_size=4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"decoder": "sample"}, "use one of " + ", ".join(DECODERS)),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"decoder": "topk", "top_k": 0}, "top_k"),
        ({"decoder": "topk"}, "top_k"),
        ({"decoder": "nucleus", "top_p": 0.0}, "top_p"),
        ({"decoder": "nucleus", "top_p": 1.5}, "top_p"),
        ({"decoder": "beam", "beam_size": 0}, "beam_size"),
        ({"decoder": "beam", "beam_size": 1}, "at most 1"),
        ({"beam_size": 3}, "only used by decoder='beam'"),
        ({"top_k": 3}, "top_k"),
        ({"seed": 1, "generator": torch.Generator()}, "not both"),
        ({"num": 0}, "num"),
        ({"max_length": 0}, "max_length"),
    ],
)
def test_invalid_arguments(model, kwargs, match):
    args = {"num": 2, "max_length": 5} | kwargs
    with pytest.raises(ConfigError, match=match):
        decode(model, **args)
