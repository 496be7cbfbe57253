"""Run directories: what a training run writes, and reading it back.

A run directory holds ``checkpoint.pt`` (the trainer's state plus what rebuilds the run: its config,
vocabulary, model and guide specs, the sampler's and random-number states, and the fingerprint of its
corpus), ``config.json`` and ``metrics.jsonl`` (see :mod:`pyroseq.runs.checkpoint` for the atomic
writes), and the lock file of :mod:`pyroseq.runs.guard`. :func:`load_run` rebuilds the trained model and
guide for evaluation, decoding and predictive checks; :func:`read_run_checkpoint` reads the fields a
resumed run needs.

Provenance: the checkpoint records a SHA-256 of the corpus as the run loaded it (the words and counts
after filtering, or the three splits of the text), so a corpus file edited, replaced or re-filtered since
is seen (:func:`check_same_data`) before a resumed run trains on it or an evaluation scores against it;
and a checkpoint must belong to the run its ``config.json`` describes
(:func:`~pyroseq.runs.config.check_config_file`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pyroseq.data.polyphonic import PolyphonicCorpus
from pyroseq.data.text import TextCorpus
from pyroseq.data.vocab import Vocabulary
from pyroseq.data.words import WordCorpus
from pyroseq.errors import CheckpointError, first_line
from pyroseq.models import SequenceModel
from pyroseq.module import load_modules
from pyroseq.runs.checkpoint import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
    write_text_atomic,
)
from pyroseq.runs.config import RunConfig, check_config_file, load_corpus, resolve_device
from pyroseq.runs.specs import build_from_specs, guide_spec, model_spec, spec_differences

__all__ = [
    "corpus_fingerprint",
    "check_same_data",
    "SavedRun",
    "read_run_checkpoint",
    "save_run_checkpoint",
    "write_config",
    "trim_metrics",
    "MetricsLog",
    "LoadedRun",
    "load_run",
    "save_run",
]


def corpus_fingerprint(corpus: WordCorpus | TextCorpus | PolyphonicCorpus) -> dict[str, str]:
    """``{"source", "sha256"}``: where the corpus came from and a SHA-256 of its content as loaded (each
    word with its count, in order; or the train, valid and test text; or a polyphonic pickle's bytes),
    which changes with the file's content and with every filter setting that changes what is kept."""
    if isinstance(corpus, PolyphonicCorpus):
        return {"source": corpus.source, "sha256": corpus.sha256}
    digest = hashlib.sha256()
    if isinstance(corpus, WordCorpus):
        for word, count in zip(corpus.words, corpus.counts.tolist(), strict=True):
            digest.update(f"{word}\t{count}\n".encode())
    else:
        for part in (corpus.train, corpus.valid, corpus.test):
            digest.update(part.encode() + b"\0")
    return {"source": corpus.source, "sha256": digest.hexdigest()}


def check_same_data(
    saved: dict[str, str] | None, corpus: WordCorpus | TextCorpus | PolyphonicCorpus, *, doing: str
) -> None:
    """Raise :class:`CheckpointError` when ``corpus`` is not the data a run with fingerprint ``saved`` was
    trained on (``None``: a checkpoint of an earlier version, which recorded none)."""
    if saved is None:
        return
    now = corpus_fingerprint(corpus)
    if now["sha256"] != saved.get("sha256"):
        raise CheckpointError(
            f"the corpus {now['source']} changed since the run was trained on it (SHA-256 "
            f"{str(saved.get('sha256'))[:12]}... then, {now['sha256'][:12]}... now): {doing} would use other "
            "data than the model learnt from; restore the corpus, or train a new run on it"
        )


@dataclass
class SavedRun:
    """A run checkpoint as read from disk: the raw ``state`` and the fields parsed from it."""

    path: Path  # the checkpoint file
    state: dict[str, Any]
    config: RunConfig
    vocab: Vocabulary | None  # None for a run on frames
    model_spec: dict[str, Any]
    guide_spec: dict[str, Any]
    step: int
    data: dict[str, str] | None  # the corpus fingerprint (None in checkpoints of earlier versions)

    def restore(self, load: Callable[[Any], None], value: Any) -> None:
        """``load(value)`` (a ``load_state_dict``, ``torch.set_rng_state``, ...); a value that does not
        fit is a :class:`CheckpointError` naming the checkpoint."""
        try:
            load(value)
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise CheckpointError(
                f"{self.path} does not match the model its config describes: {first_line(e)}"
            ) from None


def read_run_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu", require: tuple[str, ...] = ()
) -> SavedRun:
    """Read the run checkpoint at ``path`` (a file); the fields every run checkpoint holds and those in
    ``require`` (e.g. ``"sampler"``, ``"rng"`` to resume) must be present and well formed, and the
    ``config.json`` beside it must describe it (:func:`check_config_file`), or it is a
    :class:`CheckpointError`."""
    path = Path(path)
    state = load_checkpoint(path, map_location=map_location)
    for name in ("model_spec", "guide_spec", *require, "config", "vocab", "step"):
        if name not in state and state.get("written_by") == "save_run":
            raise CheckpointError(
                f"{path} was written by pyroseq.runs.save_run from a script and holds no training state "
                f"({name!r}) to resume: start a new run from its weights (pyroseq train --init-from), "
                "or load it with load_run and train on in a script"
            )
        if name not in state:
            raise CheckpointError(f"{path} lacks {name!r}: not a complete pyroseq checkpoint")
    try:
        vocab = None if state["vocab"] is None else Vocabulary.from_dict(state["vocab"])
        config = RunConfig.from_dict(state["config"])
        step = int(state["step"])
        for name in ("model_spec", "guide_spec"):
            if not isinstance(state[name], dict) or not isinstance(state[name].get("kwargs"), dict):
                raise ValueError(f"its {name} is not a registry name with arguments")
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}: not a complete pyroseq checkpoint") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a valid pyroseq checkpoint: {first_line(e)}") from None
    check_config_file(path.parent, config, path)
    data = state.get("data")
    return SavedRun(path, state, config, vocab, state["model_spec"], state["guide_spec"], step, data)


def save_run_checkpoint(
    out: Path,
    trainer_state: dict[str, Any],
    *,
    config: RunConfig,
    vocab: Vocabulary | None,
    model_spec: dict[str, Any],
    guide_spec: dict[str, Any],
    sampler_state: dict[str, Any],
    device: torch.device,
    data: dict[str, str],
    rank_states: list[dict[str, Any]] | None = None,
) -> None:
    """Write ``out/checkpoint.pt``: the trainer's state, what rebuilds the run, the random states (CPU,
    and CUDA's when the run is on a GPU), so that a resumed run equals an uninterrupted one, and ``data``,
    the corpus fingerprint (:func:`corpus_fingerprint`).

    A data-parallel run's rank 0 passes every rank's sampler and random states as ``rank_states`` (the
    fields ``sampler`` and ``rng`` hold rank 0's, as in a one-process run)."""
    payload = {
        **trainer_state,
        "data": data,
        "config": asdict(config),
        "vocab": None if vocab is None else vocab.to_dict(),
        "model_spec": model_spec,
        "guide_spec": guide_spec,
        "sampler": sampler_state,
        "rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        payload["cuda_rng"] = torch.cuda.get_rng_state_all()
    if rank_states is not None:
        payload["ranks"] = rank_states
    save_checkpoint(out / CHECKPOINT, payload)


def write_config(out: Path, config: RunConfig) -> None:
    """Write ``out/config.json``, the run's configuration for people and tools."""
    write_json_atomic(out / CONFIG, asdict(config))


def _logged_step(line: bytes) -> int | None:
    """The step of one ``metrics.jsonl`` line; None for a line that is not a UTF-8 JSON record with an
    integer step."""
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is a ValueError
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def trim_metrics(out: Path, step: int) -> list[str]:
    """Drop the lines of ``out/metrics.jsonl`` logged after ``step`` (by a run that crashed after its
    last checkpoint: a resumed run trains those steps again), a last line a crash cut short, and damaged
    lines (not UTF-8, not JSON, no integer step), which are reported.

    Returns:
        notes for the user: one naming the damaged lines skipped, if any.
    """
    path = out / METRICS
    if not path.is_file():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    kept, damaged = [], []
    for n, line in enumerate(lines, start=1):
        logged = _logged_step(line)
        if logged is None:
            if n < len(lines) or line.endswith(b"\n"):  # not merely cut short by a crash
                damaged.append(n)
        elif logged <= step:
            kept.append(line.decode("utf-8"))
    write_text_atomic(path, "".join(kept))
    if not damaged:
        return []
    shown = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
    return [f"skipped {len(damaged)} damaged lines of {path} (line {shown}): not JSON records with a step"]


class MetricsLog:
    """Writes ``out/metrics.jsonl`` one JSON line per call, line-buffered; non-finite figures are left out.

    A new run (``append=False``) starts the file afresh: a run that failed before its first checkpoint
    may have left one.
    """

    def __init__(self, out: Path, *, append: bool) -> None:
        self._file = open(out / METRICS, "a" if append else "w", buffering=1)  # noqa: SIM115 - closed by close()

    def __call__(self, record: dict[str, Any]) -> None:
        finite = {k: v for k, v in record.items() if not isinstance(v, float) or math.isfinite(v)}
        self._file.write(json.dumps(finite) + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LoadedRun:
    """A trained run: its configuration, vocabulary, model and guide (in eval mode), and step."""

    path: Path
    config: RunConfig
    vocab: Vocabulary | None  # None for a run on frames
    model: Any
    guide: Any
    step: int
    data: dict[str, str] | None = None  # the corpus fingerprint the run recorded

    def corpus(self) -> WordCorpus | TextCorpus | PolyphonicCorpus:
        """The run's corpus, loaded again from its config; :class:`CheckpointError` if it is not the data
        the run was trained on (checked by its fingerprint, and by the saved vocabulary)."""
        corpus = load_corpus(self.config)
        if corpus.vocab != self.vocab:
            raise CheckpointError(
                f"the corpus {corpus.source!r} now has the alphabet {''.join(corpus.vocab.alphabet)!r}, "
                f"but the run was trained on {''.join(self.vocab.alphabet)!r}"
            )
        check_same_data(self.data, corpus, doing=f"using the run {self.path}")
        return corpus


def load_run(path: str | Path, *, device: str = "cpu") -> LoadedRun:
    """Rebuild a run's trained model and guide from its directory (or checkpoint file), in eval mode:
    call ``.train()`` on both before training them on."""
    path = Path(path)
    run_dir = path.parent if path.is_file() else path
    ckpt = run_dir / CHECKPOINT if run_dir == path else path
    where = resolve_device(device)
    saved = read_run_checkpoint(ckpt, map_location=where)
    model, guide = build_from_specs(
        saved.model_spec, saved.guide_spec, device=where, saved_in=ckpt, state=saved.state
    )
    model.eval()
    if isinstance(guide, torch.nn.Module):
        guide.eval()
    return LoadedRun(run_dir, saved.config, saved.vocab, model, guide, saved.step, saved.data)


def save_run(
    out: str | Path,
    model: SequenceModel,
    guide: Callable[..., Any],
    *,
    config: RunConfig,
    vocab: Vocabulary | None,
    step: int = 0,
    corpus: WordCorpus | TextCorpus | PolyphonicCorpus | None = None,
) -> Path:
    """Write a run directory from a model and guide trained in a script (plain SVI, a continued run).

    ``pyroseq evaluate``, ``sample`` and ``check`` (and :func:`load_run`) accept it like one written by
    ``pyroseq train``; it holds no optimiser or sampler state, so ``pyroseq train --resume`` refuses it.
    The weights travel by ``state_dict`` (Pyro's param store is not needed, nor saved).

    Args:
        out: the directory; one that already holds a checkpoint is refused.
        model: a model the registry builds from ``config``: what ``model_spec(config, vocab)`` describes.
        guide: its guide, likewise from ``guide_spec(config, vocab)`` (a registry guide, or the empty
            guide of an RNN).
        config: the run's configuration (its corpus options say what ``evaluate`` and ``check`` load;
            its model options must describe ``model`` and ``guide``). ``load_run(...).config`` for a
            loaded run.
        vocab: the vocabulary the model was trained with (None for a model of frames).
        step: the number of training steps behind the weights, for the record.
        corpus: the corpus the model was trained on (``load_run(...).corpus()``): its fingerprint is
            recorded, so that the commands see a corpus changed since; without it none is recorded.

    Returns:
        the path of the checkpoint written.

    Raises:
        CheckpointError: ``out`` holds a run, or ``model`` / ``guide`` are not what ``config`` describes
            (another size or flow, a custom flow module, an autoguide); the message names the options of
            ``config`` that differ where the modules keep them (:func:`~pyroseq.runs.specs.spec_differences`).
    """
    out = Path(out)
    if (out / CHECKPOINT).exists():
        raise CheckpointError(f"{out} already holds a run; choose another directory")
    config.validate()
    specs = model_spec(config, vocab), guide_spec(config, vocab)
    built_model, built_guide = build_from_specs(*specs)
    name = getattr(built_guide, "__name__", type(built_guide).__name__)
    if type(model) is not type(built_model) or not (guide is built_guide or type(guide) is type(built_guide)):
        raise CheckpointError(
            f"the config describes a {type(built_model).__name__} with the guide {name}; got a "
            f"{type(model).__name__} with {getattr(guide, '__name__', type(guide).__name__)}: save_run "
            "writes models and guides of pyroseq's registry (pyroseq evaluate cannot rebuild an autoguide)"
        )
    differ = spec_differences(specs[0], model, role="model") + spec_differences(specs[1], guide, role="guide")
    if differ:
        raise CheckpointError(
            f"the model or guide is not what the config describes ({'; '.join(differ)}): pass the config "
            "they were built with"
        )
    state: dict[str, Any] = {"step": int(step), "model": model.state_dict()}
    state["model_extra"] = model.extra_state_dict()
    if isinstance(guide, torch.nn.Module):
        state["guide"] = guide.state_dict()
    try:
        load_modules(built_model, built_guide, state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        # torch's first line only says which module; the next says which weights do not fit
        said = " ".join(str(e).split())[:400]
        raise CheckpointError(
            f"the model or guide is not what the config describes (model {specs[0]['name']} with "
            f"{specs[0]['kwargs']}, guide {specs[1]['name']} with {specs[1]['kwargs']}): {said}"
        ) from None
    payload = {
        **state,
        "written_by": "save_run",
        "config": asdict(config),
        "vocab": None if vocab is None else vocab.to_dict(),
        "model_spec": specs[0],
        "guide_spec": specs[1],
    }
    if corpus is not None:
        payload["data"] = corpus_fingerprint(corpus)
    save_checkpoint(out / CHECKPOINT, payload)
    write_config(out, config)
    return out / CHECKPOINT
