"""Training runs: a configuration, a run directory, and the wiring from data to a trained model.

This is what ``pyroseq train`` calls. A run directory holds ``checkpoint.pt``, ``config.json`` and
``metrics.jsonl`` (see :mod:`pyroseq.infer.checkpoint`); :func:`load_run` rebuilds the model and guide
from it for evaluation, decoding and predictive checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pyroseq.data.text import TextCorpus, load_text
from pyroseq.data.vocab import Vocabulary
from pyroseq.data.words import WordCorpus, load_words
from pyroseq.errors import CheckpointError, ConfigError, DeviceError
from pyroseq.infer.checkpoint import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
)
from pyroseq.infer.objectives import OBJECTIVES
from pyroseq.infer.trainer import Trainer
from pyroseq.models import build_guide, build_model

__all__ = ["RunConfig", "LoadedRun", "train_run", "load_run", "resolve_device", "load_corpus"]

DATA = ("words", "text")
MODELS = ("dssm", "rnn")
TRAINING = ("teacher", "scheduled", "professor")


@dataclass
class RunConfig:
    """Everything that defines a training run; saved as ``config.json`` and inside the checkpoint."""

    # data
    data: str = "words"  # words | text
    source: str | None = None  # a corpus name or a file; default symspell (words) / shakespeare (text)
    top: int | None = None  # words: keep the N most frequent (default 10,000 for symspell)
    max_length: int | None = None  # words: drop longer words (default 12 for named sources)
    chunk_length: int = 64  # text: symbols per training sequence
    # model
    model: str = "dssm"  # dssm | rnn
    state_dim: int = 16  # D, the state size (the paper used 8 and 16); the RNN's hidden size
    flow: str = "triangular"  # DSSM transition flow f_G
    flow_hidden: int = 64
    emitter_hidden: int = 64  # 0: a linear emitter
    guide: str = "future"  # future | gaussian
    guide_flow: str = "diagonal"  # the guide's own flow f_Q ("none" for none)
    guide_hidden: int = 64  # the guide's backward-RNN size
    cell: str = "gru"  # rnn: gru | lstm
    embed_dim: int = 16
    layers: int = 1
    training: str = "teacher"  # rnn: teacher | scheduled | professor
    schedule: str = "invsigmoid"  # scheduled sampling: linear | exp | invsigmoid
    schedule_k: float | None = None  # the schedule's rate (default: set from --steps)
    adversarial_weight: float = 1.0  # professor forcing
    # optimisation
    objective: str = "elbo"  # elbo | iwae
    particles: int = 1  # K
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    lr_decay: float = 0.1  # the learning rate decays geometrically to lr * lr_decay
    clip_norm: float = 10.0
    jit: bool = False
    device: str = "cpu"
    seed: int = 0
    valid_every: int = 100
    valid_size: int = 512
    checkpoint_every: int = 200

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid option."""
        for name, valid in (
            ("data", DATA),
            ("model", MODELS),
            ("objective", OBJECTIVES),
            ("training", TRAINING),
        ):
            if getattr(self, name) not in valid:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}: use one of {', '.join(valid)}")
        positive = ("state_dim", "flow_hidden", "guide_hidden", "embed_dim", "layers", "particles", "steps",
                    "batch_size", "chunk_length", "valid_size")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("valid_every", "checkpoint_every", "emitter_hidden"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.model == "rnn" and self.objective == "iwae" and self.particles > 1:
            raise ConfigError(
                "the RNN has no latent variables: IWAE with K > 1 is the same as the exact ELBO"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(
                f"config has unknown options {unknown}: written by another pyroseq version?"
            )
        return cls(**data)


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda[:N]``; :class:`DeviceError` when CUDA is asked for and absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {name} was asked for but no CUDA GPU is available to PyTorch "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}: use cpu or cuda")
    return device


def load_corpus(config: RunConfig) -> WordCorpus | TextCorpus:
    if config.data == "words":
        return load_words(config.source or "symspell", top=config.top, max_length=config.max_length)
    return load_text(config.source or "shakespeare")


def model_spec(config: RunConfig, vocab: Vocabulary) -> dict[str, Any]:
    """The registry name and constructor arguments of the run's model (saved in the checkpoint)."""
    V = len(vocab)
    if config.model == "dssm":
        kwargs = {"vocab_size": V, "state_dim": config.state_dim, "flow": config.flow,
                  "flow_hidden": config.flow_hidden,
                  "emitter_hidden": config.emitter_hidden or None}  # fmt: skip
        return {"name": "dssm", "kwargs": kwargs}
    kwargs = {"vocab_size": V, "cell": config.cell, "state_dim": config.state_dim,
              "embed_dim": config.embed_dim, "num_layers": config.layers}  # fmt: skip
    if config.training == "scheduled":
        k = config.schedule_k
        params = {
            "linear": {"k": 1.0, "c": 1.0 / config.steps if k is None else k, "eps_min": 0.0},
            "exp": {"k": 0.01 ** (1.0 / config.steps) if k is None else k},
            "invsigmoid": {"k": max(1.0, config.steps / 10) if k is None else k},
        }
        if config.schedule not in params:
            raise ConfigError(f"unknown schedule {config.schedule!r}: use one of {', '.join(params)}")
        kwargs["schedule"] = {"kind": config.schedule, **params[config.schedule]}
    if config.training == "professor":
        kwargs["adversarial_weight"] = config.adversarial_weight
        return {"name": "professor", "kwargs": kwargs}
    return {"name": "rnn", "kwargs": kwargs}


def guide_spec(config: RunConfig, vocab: Vocabulary) -> dict[str, Any]:
    if config.model != "dssm":
        return {"name": "empty", "kwargs": {}}
    kwargs = {"vocab_size": len(vocab), "state_dim": config.state_dim, "embed_dim": config.embed_dim,
              "rnn_hidden": config.guide_hidden}  # fmt: skip
    if config.guide != "gaussian":
        kwargs["flow"] = None if config.guide_flow == "none" else config.guide_flow
        kwargs["flow_hidden"] = config.flow_hidden
    return {"name": config.guide, "kwargs": kwargs}


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


def _build(spec_model: dict, spec_guide: dict, device: torch.device) -> tuple[Any, Any]:
    model = build_model(spec_model["name"], **spec_model["kwargs"]).to(device)
    guide = build_guide(spec_guide["name"], **spec_guide["kwargs"])
    if isinstance(guide, torch.nn.Module):
        guide = guide.to(device)
    return model, guide


def _restore(trainer_or_modules: Any, state: dict, path: Path) -> None:
    try:
        trainer_or_modules(state)
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise CheckpointError(f"{path} does not match the model its config describes: {first}") from None


def load_run(path: str | Path, *, device: str = "cpu") -> LoadedRun:
    """Rebuild a run's model and guide from its directory (or checkpoint file)."""
    path = Path(path)
    run_dir = path.parent if path.is_file() else path
    state = load_checkpoint(
        run_dir / CHECKPOINT if run_dir == path else path, map_location=resolve_device(device)
    )
    try:
        config = RunConfig.from_dict(state["config"])
        vocab = Vocabulary.from_dict(state["vocab"])
        model, guide = _build(state["model_spec"], state["guide_spec"], resolve_device(device))
    except KeyError as e:
        raise CheckpointError(f"{run_dir} checkpoint lacks {e.args[0]!r}: not a pyroseq run") from None

    def load(s: dict) -> None:
        model.load_state_dict(s["model"])
        if isinstance(guide, torch.nn.Module):
            guide.load_state_dict(s["guide"])
        model.load_extra_state_dict(s.get("model_extra", {}))

    _restore(load, state, run_dir)
    model.eval()
    if isinstance(guide, torch.nn.Module):
        guide.eval()
    return LoadedRun(run_dir, config, vocab, model, guide, int(state["step"]))


def _config_differences(saved: RunConfig, given: dict[str, Any]) -> list[str]:
    allowed = {"steps", "device", "valid_every", "checkpoint_every"}  # may change on resume
    return [
        f"--{k.replace('_', '-')} {v} (the run has {getattr(saved, k)})"
        for k, v in given.items()
        if k not in allowed and getattr(saved, k) != v
    ]


def train_run(
    config: RunConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train (or, with ``resume=True``, continue) the run in directory ``out``.

    Args:
        config: the configuration of a new run (ignored on resume, where ``config.json`` is used).
        out: the run directory; a new run refuses a directory that already holds one.
        resume: continue from ``out/checkpoint.pt``. ``overrides`` may change ``steps`` (to train
            longer), ``device`` and the logging intervals; any other differing option is an error.

    Returns:
        a summary: ``steps``, ``initial_loss``, ``final_loss`` (per sequence), ``words_per_second``
        (word data) or ``symbols_per_second`` (text), ``checkpoint``, ``valid_loss``, ``interrupted``.
    """
    out = Path(out)
    overrides = overrides or {}
    state = None
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise CheckpointError(
                f"--resume: {out} holds no checkpoint to resume; drop --resume to start a run"
            )
        state = load_checkpoint(out / CHECKPOINT)
        config = RunConfig.from_dict(state["config"])
        diffs = _config_differences(config, overrides)
        if diffs:
            raise CheckpointError(f"--resume: options differ from the saved run: {'; '.join(diffs)}")
        config = dataclasses.replace(config, **overrides)
    else:
        if config is None:
            raise ConfigError("a new run needs a config")
        config = dataclasses.replace(config, **overrides)
        if (out / CONFIG).exists() or (out / CHECKPOINT).exists():
            raise CheckpointError(
                f"{out} already holds a run; pass --resume to continue it, or choose another --out"
            )
    config.validate()
    device = resolve_device(config.device)

    corpus = load_corpus(config)
    vocab = corpus.vocab
    if state is not None and Vocabulary.from_dict(state["vocab"]) != vocab:
        raise CheckpointError(f"--resume: the corpus's alphabet changed since {out} was trained")
    spec_model, spec_guide = (
        (state["model_spec"], state["guide_spec"])
        if state
        else (model_spec(config, vocab), guide_spec(config, vocab))
    )
    torch.manual_seed(config.seed)
    model, guide = _build(spec_model, spec_guide, device)
    trainer = Trainer(
        model, guide, objective=config.objective, particles=config.particles, lr=config.lr,
        lr_decay=config.lr_decay, total_steps=config.steps, clip_norm=config.clip_norm, jit=config.jit,
    )  # fmt: skip
    if isinstance(corpus, WordCorpus):
        sampler = corpus.sampler(config.batch_size, seed=config.seed, device=device)
        valid = corpus.batch(corpus.sampler(config.valid_size, seed=config.seed + 1).indices(), device=device)
        unit, per_sequence = "words", 1.0
    else:
        sampler = corpus.sampler(
            config.batch_size, length=config.chunk_length, seed=config.seed, device=device
        )
        chunks = corpus.chunks("valid", config.chunk_length)
        valid = type(chunks)(*(t[: config.valid_size] for t in (chunks.ids, chunks.mask, chunks.lengths))).to(
            device
        )
        unit, per_sequence = "symbols", float(config.chunk_length)
    initial_loss = None
    if state is not None:
        _restore(trainer.load_state_dict, state, out)
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"])
        initial_loss = state.get("initial_loss")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG, asdict(config))
    last_valid: dict[str, float] = {}

    def validate() -> dict[str, float]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed + 2)
            loss = trainer.evaluate_loss(valid)
        last_valid["valid_loss"] = loss
        return {"valid_loss": loss}

    def checkpoint() -> None:
        payload = {
            **trainer.state_dict(),
            "config": asdict(config),
            "vocab": vocab.to_dict(),
            "model_spec": spec_model,
            "guide_spec": spec_guide,
            "sampler": sampler.state_dict(),
            "rng": torch.get_rng_state(),
            "initial_loss": initial_loss,
        }
        save_checkpoint(out / CHECKPOINT, payload)

    with open(out / METRICS, "a", buffering=1) as metrics:

        def log(record: dict[str, Any]) -> None:
            nonlocal initial_loss
            if initial_loss is None:
                initial_loss = record["loss"]
            metrics.write(
                json.dumps({k: v for k, v in record.items() if not isinstance(v, float) or math.isfinite(v)})
                + "\n"
            )

        summary = trainer.fit(
            sampler, steps=config.steps, validate=validate, valid_every=config.valid_every,
            checkpoint=checkpoint, checkpoint_every=config.checkpoint_every, log=log, progress=progress,
            unit="words" if unit == "words" else "seq",
        )  # fmt: skip
    if "valid_loss" not in last_valid and trainer.step_count > 0:
        validate()
    rate = summary["sequences_per_second"]
    result = {
        "run_dir": str(out),
        "model": spec_model["name"],
        "data": config.data,
        "objective": config.objective,
        "particles": config.particles,
        "steps": summary["steps"],
        "steps_this_run": summary["steps_this_run"],
        "batch_size": config.batch_size,
        "initial_loss": initial_loss,
        "final_loss": summary["final_loss"],
        "valid_loss": last_valid.get("valid_loss"),
        "loss_unit": "nats per word" if unit == "words" else f"nats per {config.chunk_length}-symbol chunk",
        f"{unit}_per_second": None if rate is None else rate * per_sequence,
        "seconds": summary["seconds"],
        "checkpoint": str(out / CHECKPOINT),
        "interrupted": summary["interrupted"],
    }
    return result
