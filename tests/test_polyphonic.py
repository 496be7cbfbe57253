"""Polyphonic piano rolls: the restricted unpickler, the published layout, rolls and masks, the sampler, the
command, and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import pyroseq
from pyroseq.cli.main import cli
from pyroseq.data.polyphonic import NUM_KEYS, load_polyphonic, pad_frames, read_polyphonic_pickle
from pyroseq.errors import DataError

JSB_SHA256 = "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c"
# The published JSB file, where a checkout sits beside the project's shared data (it is not in the repo).
JSB = next(
    (
        path
        for parent in Path(pyroseq.__file__).resolve().parents
        if (path := parent / "shared" / "data" / "jsb_chorales.pickle").is_file()
    ),
    None,
)


def chord(*pitches: int) -> tuple:
    """A frame as the published files store it: a tuple of numpy int64 scalars."""
    return tuple(np.int64(p) for p in pitches)


def corpus_dict(**changes) -> dict:
    data = {
        "train": [[chord(60, 64, 67), chord(), chord(21, 108)], [chord(62)]],
        "valid": [[chord(60), chord(60, 72)]],
        "test": [[chord(48, 52, 55, 60)]],
    }
    return {**data, **changes}


def write_pickle(tmp_path: Path, data: object, name: str = "music.pickle") -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


# --- the restricted unpickler ------------------------------------------------------------------------


class _TouchesAFile:
    """Unpickling this calls ``os.system("touch <path>")``: the classic pickle exploit."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path, _TouchesAFile(marker))
    assert b"system" in path.read_bytes()  # the exploit is really in the file
    with pytest.raises(DataError) as error:
        load_polyphonic(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert f"{os.system.__module__}.system" in message and "refusing" in message
    assert not marker.exists()
    # Plain pickle would have run it: the test's exploit is live.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_a_foreign_global_hidden_inside_a_valid_layout_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path, corpus_dict(test=[[chord(60), _TouchesAFile(marker)]]))
    with pytest.raises(DataError, match="refusing"):
        read_polyphonic_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("value", [eval, pickle.loads, Path("/tmp"), 1 + 2j, torch.zeros(1)])
def test_every_global_beyond_numpy_scalars_and_dtypes_is_refused(tmp_path, value):
    with pytest.raises(DataError, match="refusing to load it"):
        read_polyphonic_pickle(write_pickle(tmp_path, corpus_dict(train=[[value]])))


@pytest.mark.parametrize("core", ["numpy._core", "numpy.core"], ids=["numpy2", "numpy1"])
def test_numpy_scalars_of_either_numpy_load_without_a_deprecation_warning(tmp_path, recwarn, core):
    """numpy 1 pickled its scalars as numpy.core.multiarray.scalar (the published files do), numpy 2 as
    numpy._core...; both load, and numpy 2's deprecated numpy.core is never imported."""
    data = pickle.dumps(corpus_dict(), protocol=3)  # protocol 3: globals as text, no framing
    assert b"numpy._core.multiarray\nscalar" in data
    path = tmp_path / "music.pickle"
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", f"{core}.multiarray\n".encode()))
    corpus = load_polyphonic(path)
    assert corpus.train.rolls[0][0].nonzero().flatten().tolist() == [39, 43, 46]
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


# --- layout and rolls -------------------------------------------------------------------------------


def test_pitches_become_columns_and_rests_are_silent(tmp_path):
    corpus = load_polyphonic(write_pickle(tmp_path, corpus_dict()))
    roll = corpus.train.rolls[0]
    assert roll.shape == (3, NUM_KEYS) == (3, 88) and roll.dtype == torch.float32
    assert roll[0].nonzero().flatten().tolist() == [60 - 21, 64 - 21, 67 - 21]
    assert roll[1].sum() == 0  # a rest
    assert roll[2].nonzero().flatten().tolist() == [0, 87]  # A0 and C8, the piano's ends
    assert [len(corpus.split(name)) for name in ("train", "valid", "test")] == [2, 1, 1]
    assert corpus.sha256 == hashlib.sha256((tmp_path / "music.pickle").read_bytes()).hexdigest()


def test_plain_python_ints_and_lists_are_accepted(tmp_path):
    data = {"train": [[[60, 64]]], "valid": [[(62,)]], "test": [[[], [21]]]}
    corpus = load_polyphonic(write_pickle(tmp_path, data))
    assert corpus.test.rolls[0][1, 0] == 1 and corpus.train.rolls[0].sum() == 2


def test_split_statistics(tmp_path):
    s = load_polyphonic(write_pickle(tmp_path, corpus_dict())).stats()
    train = s["splits"]["train"]
    assert train["sequences"] == 2 and train["frames"] == 4
    assert train["mean_notes_per_frame"] == pytest.approx((3 + 0 + 2 + 1) / 4)
    assert train["max_polyphony"] == 3 and train["mean_length"] == 2.0 and train["max_length"] == 3
    assert train["pitch_range"] == [21, 108]
    assert s["splits"]["test"]["max_polyphony"] == 4
    json.dumps(s)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected a dict with keys 'train', 'valid' and 'test', got a list"),
        ({"train": [], "test": []}, "got keys 'test', 'train'$"),
        (corpus_dict(valid=[]), "the valid split is an empty list"),
        (corpus_dict(valid="abc"), "the valid split is a str"),
        (corpus_dict(test=[[chord(60)], []]), "test sequence 1 is empty \\(no frames\\)"),
        (corpus_dict(train=[[chord(60)], "xyz"]), "train sequence 1 is a str, not a list of frames"),
        (corpus_dict(train=[[chord(60), 61]]), "train sequence 0, frame 1: a int, not a tuple"),
        (corpus_dict(valid=[[chord(60), chord(60, 20)]]), "valid sequence 0, frame 1: pitch 20 is outside"),
        (
            corpus_dict(test=[[chord(), chord(), chord(109)]]),
            "test sequence 0, frame 2: pitch 109 is outside",
        ),
        (corpus_dict(train=[[(60.0,)]]), "train sequence 0, frame 0: pitch 60.0 is not an integer"),
        (corpus_dict(train=[[(True,)]]), "pitch True is not an integer"),
    ],
)
def test_bad_layouts_are_one_line_errors_naming_file_sequence_and_frame(tmp_path, data, message):
    path = write_pickle(tmp_path, data)
    with pytest.raises(DataError, match=message) as error:
        load_polyphonic(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"train,valid,test\n", "is not a readable pickle"), (b"", "is not a readable pickle")],
)
def test_files_that_are_not_pickles(tmp_path, content, message):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_polyphonic(path)
    truncated = write_pickle(tmp_path, corpus_dict())
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(DataError, match="is not a readable pickle"):
        load_polyphonic(truncated)
    with pytest.raises(DataError, match="file not found"):
        load_polyphonic(tmp_path / "missing.pickle")


# --- batches and the sampler -------------------------------------------------------------------------


def test_batches_are_padded_with_silence_and_masked(tmp_path):
    corpus = load_polyphonic(write_pickle(tmp_path, corpus_dict()))
    batch = corpus.train.batch()
    assert batch.frames.shape == (2, 3, 88) and batch.mask.tolist() == [[True] * 3, [True, False, False]]
    assert batch.lengths.tolist() == [3, 1] and batch.num_frames == 4 and len(batch) == 2
    assert batch.frames[1, 1:].sum() == 0 and batch.frames[1, 0, 62 - 21] == 1
    with pytest.raises(DataError, match="empty sequence \\(sequence 1\\)"):
        pad_frames([torch.ones(2, 88), torch.ones(0, 88)])
    with pytest.raises(DataError, match="more than max_length=2"):
        pad_frames([torch.ones(3, 88)], max_length=2)
    assert [len(b) for b in corpus.train.batches(1)] == [1, 1]


def test_sampler_visits_every_sequence_once_an_epoch_and_resumes(tmp_path):
    data = corpus_dict(train=[[chord(21 + i)] * (1 + i % 3) for i in range(10)])
    split = load_polyphonic(write_pickle(tmp_path, data)).train
    sampler = split.sampler(4, seed=3)
    first = [sampler.indices() for _ in range(5)]  # 20 draws: two whole epochs
    stream = torch.cat(first)
    assert sorted(stream[:10].tolist()) == list(range(10)) == sorted(stream[10:].tolist())
    assert not torch.equal(stream[:10], stream[10:])  # each epoch in a new order
    again = split.sampler(4, seed=3)
    assert all(torch.equal(a, again.indices()) for a in first)
    assert not torch.equal(torch.cat([split.sampler(4, seed=4).indices() for _ in range(2)]), stream[:8])

    resumed = split.sampler(4, seed=0)
    original = split.sampler(4, seed=0)
    next(original)  # the state mid-epoch: 6 indices of the epoch left
    resumed.load_state_dict(original.state_dict())
    for _ in range(3):
        a, b = next(original), next(resumed)
        assert torch.equal(a.frames, b.frames) and torch.equal(a.mask, b.mask)
    batch = next(split.sampler(4, seed=0))
    assert batch.frames.shape == (4, split.max_length, 88)
    # the sequences the sampler drew, longest first (ties in the drawn order)
    drawn = split.sampler(4, seed=0).indices()
    expected = drawn[torch.argsort(split.lengths[drawn], descending=True, stable=True)]
    assert torch.equal(batch.frames, split.batch(expected).frames)
    assert bool((batch.lengths[:-1] >= batch.lengths[1:]).all())
    # pad_to="batch": as long as the batch's longest sequence, the same sequences and frames
    fitted = next(split.sampler(4, seed=0, pad_to="batch"))
    assert fitted.frames.shape == (4, int(fitted.lengths.max()), 88)
    assert torch.equal(fitted.frames, batch.frames[:, : fitted.frames.shape[1]])
    pairs = split.sampler(2, seed=0, pad_to="batch")
    assert min(next(pairs).frames.shape[1] for _ in range(10)) < split.max_length
    with pytest.raises(DataError, match="pad_to is 'split' or 'batch'"):
        split.sampler(4, pad_to="longest")


# --- the published file and the command ---------------------------------------------------------------


@pytest.mark.skipif(JSB is None, reason="the JSB chorales file (shared/data/jsb_chorales.pickle) is absent")
def test_the_published_jsb_file():
    corpus = load_polyphonic(JSB)
    assert corpus.sha256 == JSB_SHA256
    sizes = {name: (s["sequences"], s["frames"]) for name, s in corpus.stats()["splits"].items()}
    assert sizes == {"train": (229, 13807), "valid": (76, 4602), "test": (77, 4725)}
    assert corpus.train.stats()["pitch_range"] == [43, 96]


def test_cli_prints_each_split_and_json(tmp_path):
    path = write_pickle(tmp_path, corpus_dict())
    out = CliRunner().invoke(cli, ["data", "polyphonic", "--file", str(path)])
    assert out.exit_code == 0, out.output
    assert "train  sequences    2   frames      4   notes per frame 1.500   max polyphony 3" in out.output
    out = CliRunner().invoke(cli, ["data", "polyphonic", "--file", str(path), "--json"])
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["splits"]["valid"]["frames"] == 2 and result["keys"] == 88


def test_cli_refuses_a_malicious_file_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path, _TouchesAFile(marker))
    out = CliRunner().invoke(cli, ["data", "polyphonic", "--file", str(path)])
    assert out.exit_code == 2 and out.output.startswith("error:") and "refusing" in out.output
    assert len(out.output.strip().splitlines()) == 1 and not marker.exists()
