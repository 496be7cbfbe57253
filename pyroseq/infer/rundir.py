"""Run directories: what a training run writes, and reading it back.

A run directory holds ``checkpoint.pt`` (the trainer's state plus what rebuilds the run: its config,
vocabulary, model and guide specs, the sampler's and random-number states), ``config.json`` and
``metrics.jsonl`` (see :mod:`pyroseq.infer.checkpoint` for the atomic writes). :func:`load_run` rebuilds
the trained model and guide for evaluation, decoding and predictive checks; :func:`read_run_checkpoint`
reads the fields a resumed run needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pyroseq.data.text import TextCorpus
from pyroseq.data.vocab import Vocabulary
from pyroseq.data.words import WordCorpus
from pyroseq.errors import CheckpointError, first_line
from pyroseq.infer.checkpoint import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
    write_text_atomic,
)
from pyroseq.infer.config import RunConfig, load_corpus, resolve_device
from pyroseq.infer.specs import build_from_specs
from pyroseq.infer.trainer import load_modules

__all__ = [
    "SavedRun",
    "read_run_checkpoint",
    "save_run_checkpoint",
    "write_config",
    "trim_metrics",
    "MetricsLog",
    "LoadedRun",
    "load_run",
]


@dataclass
class SavedRun:
    """A run checkpoint as read from disk: the raw ``state`` and the fields parsed from it."""

    path: Path  # the checkpoint file
    state: dict[str, Any]
    config: RunConfig
    vocab: Vocabulary
    model_spec: dict[str, Any]
    guide_spec: dict[str, Any]
    step: int

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
    ``require`` (e.g. ``"sampler"``, ``"rng"`` to resume) must be present and well formed, or it is a
    :class:`CheckpointError`."""
    path = Path(path)
    state = load_checkpoint(path, map_location=map_location)
    for name in ("model_spec", "guide_spec", *require, "config", "vocab", "step"):
        if name not in state:
            raise CheckpointError(f"{path} lacks {name!r}: not a complete pyroseq checkpoint")
    try:
        config = RunConfig.from_dict(state["config"])
        vocab = Vocabulary.from_dict(state["vocab"])
        step = int(state["step"])
        for name in ("model_spec", "guide_spec"):
            if not isinstance(state[name], dict) or not isinstance(state[name].get("kwargs"), dict):
                raise ValueError(f"its {name} is not a registry name with arguments")
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}: not a complete pyroseq checkpoint") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a valid pyroseq checkpoint: {first_line(e)}") from None
    return SavedRun(path, state, config, vocab, state["model_spec"], state["guide_spec"], step)


def save_run_checkpoint(
    out: Path,
    trainer_state: dict[str, Any],
    *,
    config: RunConfig,
    vocab: Vocabulary,
    model_spec: dict[str, Any],
    guide_spec: dict[str, Any],
    sampler_state: dict[str, Any],
    device: torch.device,
) -> None:
    """Write ``out/checkpoint.pt``: the trainer's state, what rebuilds the run, and the random states
    (CPU, and CUDA's when the run is on a GPU), so that a resumed run equals an uninterrupted one."""
    payload = {
        **trainer_state,
        "config": asdict(config),
        "vocab": vocab.to_dict(),
        "model_spec": model_spec,
        "guide_spec": guide_spec,
        "sampler": sampler_state,
        "rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        payload["cuda_rng"] = torch.cuda.get_rng_state_all()
    save_checkpoint(out / CHECKPOINT, payload)


def write_config(out: Path, config: RunConfig) -> None:
    """Write ``out/config.json``, the run's configuration for people and tools."""
    write_json_atomic(out / CONFIG, asdict(config))


def _logged_step(line: str) -> int | None:
    """The step of one ``metrics.jsonl`` line; None for a line a crash cut short."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("step") if isinstance(record, dict) else None


def trim_metrics(out: Path, step: int) -> None:
    """Drop the lines of ``out/metrics.jsonl`` logged after ``step`` (by a run that crashed after its
    last checkpoint: a resumed run trains those steps again), and lines a crash cut short."""
    path = out / METRICS
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [x for x in lines if (logged := _logged_step(x)) is not None and logged <= step]
    write_text_atomic(path, "".join(kept))


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
    vocab: Vocabulary
    model: Any
    guide: Any
    step: int

    def corpus(self) -> WordCorpus | TextCorpus:
        """The run's corpus, loaded again from its config (checked against the saved vocabulary)."""
        corpus = load_corpus(self.config)
        if corpus.vocab != self.vocab:
            raise CheckpointError(
                f"the corpus {corpus.source!r} now has the alphabet {''.join(corpus.vocab.alphabet)!r}, "
                f"but the run was trained on {''.join(self.vocab.alphabet)!r}"
            )
        return corpus


def load_run(path: str | Path, *, device: str = "cpu") -> LoadedRun:
    """Rebuild a run's trained model and guide from its directory (or checkpoint file)."""
    path = Path(path)
    run_dir = path.parent if path.is_file() else path
    ckpt = run_dir / CHECKPOINT if run_dir == path else path
    where = resolve_device(device)
    saved = read_run_checkpoint(ckpt, map_location=where)
    model, guide = build_from_specs(saved.model_spec, saved.guide_spec, device=where, saved_in=ckpt)
    saved.restore(lambda s: load_modules(model, guide, s), saved.state)
    model.eval()
    if isinstance(guide, torch.nn.Module):
        guide.eval()
    return LoadedRun(run_dir, saved.config, saved.vocab, model, guide, saved.step)
