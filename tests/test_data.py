"""Corpora, vocabulary and batches: loading, filtering, distributions, bad input."""

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

import pyroseq.data
from pyroseq.cli.main import cli
from pyroseq.data import Vocabulary, pad_batch
from pyroseq.data.files import to_nfc
from pyroseq.data.text import TextSampler, clean_play, load_text
from pyroseq.data.words import load_words
from pyroseq.errors import DataError


@pytest.fixture(scope="module")
def sample():
    return load_words("sample")


def write(tmp_path, text, name="words.txt", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


# --- word corpus -------------------------------------------------------------------------------------


def test_sample_is_sorted_and_probabilities_match_counts(sample):
    assert len(sample) == 400
    assert np.all(np.diff(sample.counts) <= 0)
    assert sample.probs.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(sample.probs, sample.counts / sample.counts.sum())
    p = sample.probs
    assert sample.entropy_nats == pytest.approx(-(p * np.log(p)).sum())
    assert sample.entropy_bits == pytest.approx(sample.entropy_nats / np.log(2))
    lengths = np.array([len(w) + 1 for w in sample.words])
    assert sample.mean_length == pytest.approx((p * lengths).sum())


def test_top_keeps_the_most_frequent(tmp_path):
    path = write(tmp_path, "b 5\na 10\nc 1\nd 5\n")
    corpus = load_words(path, top=3)
    assert corpus.words == ["a", "b", "d"]  # sorted by count, ties in file order
    assert corpus.counts.tolist() == [10, 5, 5]


def test_symspell_filter_and_entropy():
    pytest.importorskip("symspellpy")
    corpus = load_words("symspell")  # the paper's task: the 10,000 most frequent words by default
    assert len(corpus) == 10_000
    assert all(w.isascii() and w.islower() and 1 <= len(w) <= 12 for w in corpus.words)
    assert corpus.entropy_nats == pytest.approx(7.328, abs=5e-4)
    assert corpus.mean_length == pytest.approx(5.86, abs=5e-3)


def test_german_list_keeps_umlauts_and_cuts_like_symspell():
    pytest.importorskip("spellchecker")
    corpus = load_words("german")  # the second list of the word task: pyspellchecker's German counts
    assert len(corpus) == 10_000
    assert corpus.words[:3] == ["ich", "ist", "die"]
    assert all(re.fullmatch("[a-zäöüß]{1,12}", w) for w in corpus.words)
    assert {"ä", "ö", "ü", "ß"} <= set(corpus.vocab.alphabet)
    assert corpus.entropy_nats == pytest.approx(5.787, abs=5e-4)
    assert any("[a-zäöüß]+" in note for note in corpus.notes)


def test_plain_word_list_is_uniform_and_keeps_unicode(tmp_path):
    path = write(tmp_path, "straße\nÉcole\nnaïve\n")
    corpus = load_words(path)
    assert corpus.words == ["straße", "École", "naïve"]
    np.testing.assert_allclose(corpus.probs, 1 / 3)
    assert {"ß", "É", "ï"} <= set(corpus.vocab.alphabet)


def test_long_and_non_letter_words_are_dropped_and_reported(tmp_path):
    path = write(tmp_path, "abc 3\nabcdefgh 2\nx1 1\n")
    corpus = load_words(path, max_length=5)
    assert corpus.words == ["abc"]
    assert any("dropped 1 words longer than 5" in n for n in corpus.notes)
    assert any("not letters: '1' DIGIT ONE in 1 (e.g. 'x1')" in n for n in corpus.notes)


def test_words_in_nfd_are_normalised_to_nfc_and_reported(tmp_path):
    """'café' written as e + U+0301 was dropped as a word with a non-letter symbol."""
    nfd = unicodedata.normalize("NFD", "café")
    corpus = load_words(write(tmp_path, f"{nfd} 2\nthé 1\n"))
    assert corpus.words == ["café", "thé"]
    assert "\u0301" not in corpus.vocab.alphabet and "é" in corpus.vocab.alphabet
    assert any(n.startswith("normalised 1 line to Unicode NFC") for n in corpus.notes)
    assert corpus.vocab.encode(nfd) == corpus.vocab.encode("café")  # input typed in NFD too
    dup = write(tmp_path, f"{nfd} 2\ncafé 1\n", name="dup.txt")
    with pytest.raises(DataError, match="already appeared on line 1"):
        load_words(dup)


def test_to_nfc_counts_the_lines_it_changed():
    nfd = unicodedata.normalize("NFD", "caf\u00e9")
    assert to_nfc("abc\ndef\n") == ("abc\ndef\n", 0)
    assert to_nfc(f"{nfd}\nabc\n{nfd}\n") == ("caf\u00e9\nabc\ncaf\u00e9\n", 2)


def test_text_in_nfd_is_normalised_to_nfc(tmp_path):
    nfd = unicodedata.normalize("NFD", "le café est bon\n")
    corpus = load_text(write(tmp_path, nfd * 40))
    assert "é" in corpus.vocab.alphabet and "\u0301" not in corpus.vocab.alphabet
    assert corpus.notes == ["normalised 40 lines to Unicode NFC"]


def test_named_sources_honour_a_max_length_above_12(tmp_path, monkeypatch):
    """The letters-only filter of a named source must not cut words before max_length does."""
    path = write(tmp_path, "abc 9\nabcdefghijklmnop 5\nabcdefghijklmn 4\nx1 2\n")
    monkeypatch.setattr("pyroseq.data.words._sample_path", lambda: path)
    corpus = load_words("sample", max_length=15)
    assert corpus.words == ["abc", "abcdefghijklmn"] and corpus.max_length == 15
    assert "kept 3 of 4 words matching [a-z]+" in corpus.notes
    assert "dropped 1 words longer than 15 symbols" in corpus.notes
    assert load_words("sample").words == ["abc"]  # the default max_length is still 12


def test_symspell_max_length_above_12():
    pytest.importorskip("symspellpy")
    assert load_words("symspell", max_length=15).max_length == 16  # 15 letters + EOS


def test_draw_batch_draws_the_samplers_first_batch(sample):
    batch = sample.draw_batch(16, seed=3)
    assert torch.equal(batch.ids, sample.batch(sample.sampler(16, seed=3).indices()).ids)
    # the sampler's batch holds the same words, longest first
    first = next(sample.sampler(16, seed=3))
    assert torch.equal(first.ids, batch.ids[torch.argsort(batch.lengths, descending=True, stable=True)])
    assert bool((first.lengths[:-1] >= first.lengths[1:]).all())
    assert batch.ids.shape == (16, sample.max_length)
    assert not torch.equal(batch.ids, sample.draw_batch(16, seed=4).ids)
    with pytest.raises(DataError, match="must be positive"):
        sample.draw_batch(0, seed=0)


def test_sampler_matches_p_chi_square(sample):
    sampler = sample.sampler(500, seed=3)
    counts = np.zeros(len(sample))
    for _ in range(40):
        idx = sampler.indices().numpy()
        counts += np.bincount(idx, minlength=len(sample))
    # Pool the rare words so every expected count is >= 5.
    expected = sample.probs * counts.sum()
    order = np.argsort(-expected)
    big = order[expected[order] >= 5]
    rest = order[expected[order] < 5]
    obs = np.append(counts[big], counts[rest].sum())
    exp = np.append(expected[big], expected[rest].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3


def test_sampler_is_reproducible_and_resumable(sample):
    a = sample.sampler(8, seed=1)
    b = sample.sampler(8, seed=5)  # another seed: only the restored state can make it agree with a
    next(a)
    state = a.state_dict()
    next(b)
    b.load_state_dict(state)
    assert torch.equal(next(a).ids, next(b).ids)
    assert not torch.equal(next(sample.sampler(8, seed=5)).ids, next(sample.sampler(8, seed=1)).ids)
    batch = next(sample.sampler(8, seed=2))
    assert batch.ids.shape == (8, sample.max_length)
    assert torch.equal(batch.mask.sum(1), batch.lengths)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a 1\nb two\n", "line 2: count 'two' is not an integer"),
        ("a 1\nb\n", "line 2: expected `word count`"),
        ("a 1\nb 0\n", "line 2: count must be positive"),
        ("a 1\na 2\n", "line 2: word 'a' already appeared on line 1"),
        ("  \n\n", "is empty"),
    ],
)
def test_malformed_files(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load_words(write(tmp_path, text))


def test_bad_sources_and_sizes(tmp_path, sample, monkeypatch):
    with pytest.raises(DataError, match="unknown word corpus 'nope'"):
        load_words("nope")
    with pytest.raises(DataError, match="file not found"):
        load_words(tmp_path / "missing.txt")
    monkeypatch.chdir(tmp_path)  # a bare name with a suffix is a file, not a corpus name
    with pytest.raises(DataError, match="file not found"):
        load_words("missing.txt")
    with pytest.raises(DataError, match="not UTF-8"):
        load_words(write(tmp_path, "caf\xe9 1\n", encoding="latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 \(byte 13, line 3\)"):  # lines count from 1
        load_words(write(tmp_path, "ab 2\ncd 1\ncaf\xe9 1\n", encoding="latin-1"))
    with pytest.raises(DataError, match="^top must be positive"):
        load_words("sample", top=0)
    with pytest.raises(DataError, match="larger than the corpus"):
        load_words("sample", top=401)


# --- vocabulary and batches ----------------------------------------------------------------------


def test_vocabulary_round_trip_and_serialisation():
    vocab = Vocabulary.from_texts(["hello", "world"])
    assert vocab.symbols[:3] == ["<pad>", "<bos>", "<eos>"]
    assert [vocab.symbols[i] for i in (vocab.pad_id, vocab.bos_id, vocab.eos_id)] == vocab.symbols[:3]
    ids = vocab.encode("hello")
    assert ids[-1] == vocab.eos_id and len(ids) == 6
    assert vocab.decode(ids) == "hello"
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab and restored.encode("world") == vocab.encode("world")
    with pytest.raises(DataError, match="symbol 'z' in 'zoo' is not in the vocabulary"):
        vocab.encode("zoo")
    for bad in (["ab"], ["a", "<eos>"], [""]):  # one character each, and no special token as a symbol
        with pytest.raises(DataError, match="single characters"):
            Vocabulary(bad)


def test_pad_batch_masks_and_lengths():
    assert len(pad_batch([[3, 4, 2], [5, 2], [6, 2]], max_length=4)) == 3  # sequences, not steps
    batch = pad_batch([[3, 4, 2], [5, 2]], max_length=4)
    assert batch.ids.tolist() == [[3, 4, 2, 0], [5, 2, 0, 0]]
    assert batch.mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert batch.lengths.tolist() == [3, 2]
    assert batch.num_tokens == 5
    with pytest.raises(DataError, match="more than max_length"):
        pad_batch([[3, 4, 5, 2]], max_length=3)
    with pytest.raises(DataError, match="empty sequence"):
        pad_batch([[]])


# --- text corpus ---------------------------------------------------------------------------------


def test_clean_play_keeps_speakers_and_drops_markup():
    md = "# Play\n\n## ACT I\n\n_Enter A_\n\n**A**  \nHello, *world*.  \nBye.\n\n**B**  \nHi.\n"
    assert clean_play(md) == "A:\nHello, world.\nBye.\n\nB:\nHi.\n"


def test_text_sample_splits_and_chunks():
    corpus = load_text("sample")
    total = len(corpus.train) + len(corpus.valid) + len(corpus.test)
    assert len(corpus.train) == pytest.approx(0.9 * total, abs=60)
    chunks = corpus.chunks("train", 64)
    assert chunks.ids.shape[1] == 64 and bool(chunks.mask.all())
    assert corpus.vocab.decode(chunks.ids[0], stop_at_eos=False) == corpus.train[:64]
    shipped = (Path(pyroseq.data.__file__).parent / "samples" / "text.txt").read_text(encoding="utf-8")
    assert corpus.train + corpus.valid + corpus.test == unicodedata.normalize("NFC", shipped)


def test_text_sampler_draws_every_window_and_none_past_the_end():
    ids = torch.arange(10)
    sampler = TextSampler(ids, 200, length=8, seed=0)  # three windows: starts 0, 1, 2
    starts = set()
    for _ in range(5):
        batch = next(sampler)
        assert batch.ids.shape == (200, 8) and bool(batch.mask.all()) and batch.lengths.tolist() == [8] * 200
        first = batch.ids[:, 0]
        assert torch.equal(batch.ids, first[:, None] + torch.arange(8))  # contiguous slices of the text
        starts |= set(first.tolist())
    assert starts == {0, 1, 2}


def test_text_file_with_unseen_held_out_symbols(tmp_path):
    corpus = load_text(write(tmp_path, "ab" * 50 + "z", name="t.txt"), split=(0.9, 0.05, 0.05))
    assert "z" not in corpus.test and any("not seen in train" in n for n in corpus.notes)
    with pytest.raises(DataError, match="split must be"):
        load_text("sample", split=(0.5, 0.1, 0.1))


# --- command line --------------------------------------------------------------------------------


def test_cli_data_json_parses(tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["data", "words", "--source", "sample", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    for key in ("num_words", "num_symbols", "entropy_nats", "entropy_bits", "mean_length"):
        assert key in result
    out = runner.invoke(cli, ["data", "text", "--source", "sample", "--json"])
    assert json.loads(out.output.strip().splitlines()[-1])["split_chars"]["train"] > 0


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    out = CliRunner().invoke(cli, ["data", "words", "--file", str(write(tmp_path, "a 1\nb x\n"))])
    assert out.exit_code == 2
    assert out.output.strip().startswith("error:") and "line 2" in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize("command", [["data", "words"], ["data", "text"], ["train", "--out", "RUN"]])
def test_cli_source_and_file_together_is_a_usage_error(tmp_path, command):
    command = [str(tmp_path / "run") if c == "RUN" else c for c in command]
    path = str(write(tmp_path, "abc 3\n"))
    out = CliRunner().invoke(cli, [*command, "--source", "sample", "--file", path])
    assert out.exit_code == 2, out.output
    assert out.output.strip().startswith("error:") and "not both" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
