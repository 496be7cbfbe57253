"""Training runs: a configuration, a run directory, and the wiring from data to a trained model.

This is what ``pyroseq train`` calls. A run directory holds ``checkpoint.pt``, ``config.json`` and
``metrics.jsonl`` (see :mod:`pyroseq.infer.checkpoint`); :func:`load_run` rebuilds the model and guide
from it for evaluation, decoding and predictive checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pyroseq.data.text import TEXT_SOURCES, TextCorpus, load_text
from pyroseq.data.vocab import Vocabulary
from pyroseq.data.words import WORD_SOURCES, WordCorpus, load_words
from pyroseq.errors import CheckpointError, ConfigError, DeviceError
from pyroseq.guides import build_guide
from pyroseq.infer.checkpoint import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
    write_text_atomic,
)
from pyroseq.infer.objectives import OBJECTIVES
from pyroseq.infer.trainer import Trainer, load_modules
from pyroseq.models import build_model

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


def _build(
    spec_model: dict, spec_guide: dict, device: torch.device, *, checkpoint: Path | None = None
) -> tuple[Any, Any]:
    """Build the model and guide from their specs; specs read from ``checkpoint`` that do not fit the
    registry (an unknown argument, a bad value) are a :class:`CheckpointError`, not a crash."""
    try:
        model = build_model(spec_model["name"], **spec_model["kwargs"]).to(device)
        guide = build_guide(spec_guide["name"], **spec_guide["kwargs"])
    except (TypeError, ValueError, KeyError) as e:
        if checkpoint is None:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f"{checkpoint} describes a model this pyroseq cannot build: {first}") from None
    if isinstance(guide, torch.nn.Module):
        guide = guide.to(device)
    return model, guide


def _checkpoint_fields(state: dict[str, Any], path: Path, *extra: str) -> dict[str, Any]:
    """The fields every run checkpoint holds (``config`` parsed, ``vocab``, the specs, ``step``) and the
    ``extra`` ones asked for; a missing or malformed field is a :class:`CheckpointError`."""
    try:
        fields = {name: state[name] for name in ("model_spec", "guide_spec", *extra)}
        fields["config"] = RunConfig.from_dict(state["config"])
        fields["vocab"] = Vocabulary.from_dict(state["vocab"])
        fields["step"] = int(state["step"])
        for name in ("model_spec", "guide_spec"):
            if not isinstance(fields[name], dict) or not isinstance(fields[name].get("kwargs"), dict):
                raise ValueError(f"its {name} is not a registry name with arguments")
    except KeyError as e:
        raise CheckpointError(f"{path} lacks {e.args[0]!r}: not a complete pyroseq checkpoint") from None
    except (TypeError, ValueError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f"{path} is not a valid pyroseq checkpoint: {first}") from None
    return fields


def _restore(load: Callable[[dict[str, Any]], None], state: dict, path: Path) -> None:
    try:
        load(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f"{path} does not match the model its config describes: {first}") from None


def load_run(path: str | Path, *, device: str = "cpu") -> LoadedRun:
    """Rebuild a run's model and guide from its directory (or checkpoint file)."""
    path = Path(path)
    run_dir = path.parent if path.is_file() else path
    ckpt = run_dir / CHECKPOINT if run_dir == path else path
    where = resolve_device(device)
    state = load_checkpoint(ckpt, map_location=where)
    fields = _checkpoint_fields(state, ckpt)
    model, guide = _build(fields["model_spec"], fields["guide_spec"], where, checkpoint=ckpt)
    _restore(lambda s: load_modules(model, guide, s), state, ckpt)
    model.eval()
    if isinstance(guide, torch.nn.Module):
        guide.eval()
    return LoadedRun(run_dir, fields["config"], fields["vocab"], model, guide, fields["step"])


# Options that may change on resume: the length of training, where it runs, how often it logs, and
# the step size (as NonFiniteLossError advises: lower --lr or --clip-norm and resume).
RESUMABLE = {"steps", "device", "valid_every", "checkpoint_every", "lr", "lr_decay", "clip_norm"}


def _config_differences(saved: RunConfig, given: dict[str, Any]) -> list[str]:
    return [
        f"--{k.replace('_', '-')} {v} (the run has {getattr(saved, k)})"
        for k, v in given.items()
        if k not in RESUMABLE and getattr(saved, k) != v
    ]


def _inapplicable(config: RunConfig, given: set[str]) -> str | None:
    """Why the first explicitly given option in ``given`` has no effect on ``config``'s run, or None.

    A given option that would be recorded in ``config.json`` but not used misleads whoever reads the
    run later, so it is refused rather than ignored.
    """
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (("training", "schedule", "schedule_k", "adversarial_weight", "cell", "layers"),
         config.model == "dssm", "applies to --model rnn only"),
        (("flow", "flow_hidden", "emitter_hidden", "guide", "guide_flow", "guide_hidden"),
         config.model == "rnn", "applies to --model dssm only"),
        (("top", "max_length"), config.data == "text", "applies to --data words only"),
        (("chunk_length",), config.data == "words", "applies to --data text only"),
        (("guide_flow",), config.guide == "gaussian", "has no effect: --guide gaussian has no flow"),
        (("schedule", "schedule_k"), config.training != "scheduled", "applies to --training scheduled only"),
        (("adversarial_weight",), config.training != "professor", "applies to --training professor only"),
    ]  # fmt: skip
    for names, unused, why in rules:
        for name in names:
            if unused and name in given:
                return f"--{name.replace('_', '-')} {why}"
    return None


def _resolve_source(config: RunConfig) -> RunConfig:
    """Store a corpus file as an absolute path, so the run can be loaded again from another directory."""
    named = WORD_SOURCES if config.data == "words" else TEXT_SOURCES
    if config.source is None or config.source in named or not Path(config.source).is_file():
        return config
    return dataclasses.replace(config, source=str(Path(config.source).resolve()))


def _logged_step(line: str) -> int | None:
    """The step of one ``metrics.jsonl`` line; None for a line a crash cut short."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("step") if isinstance(record, dict) else None


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
        out: the run directory; a new run refuses a directory that already holds a checkpoint.
        resume: continue from ``out/checkpoint.pt``. ``overrides`` may change ``steps`` (to train
            longer, past the run's step), ``device``, the logging intervals, and the step size: ``lr``,
            ``lr_decay`` and ``clip_norm`` (to get past non-finite losses); any other differing option is
            an error. Metrics logged after the checkpoint (by a run that crashed) are dropped.
        overrides: the options given explicitly (the command line's); one that does not apply to the
            run (``--cell`` for the DSSM, ``--top`` for text, ...) is a :class:`ConfigError`.

    Returns:
        a summary: ``steps``, ``initial_loss``, ``final_loss`` (per sequence, the means of the run's
        first and last 20 steps), ``words_per_second`` (word data) or ``symbols_per_second`` (text),
        ``checkpoint``, ``valid_loss`` (at the final step), ``interrupted``.
    """
    out = Path(out)
    overrides = overrides or {}
    state = None
    fields: dict[str, Any] = {}
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise CheckpointError(
                f"--resume: {out} holds no checkpoint to resume; drop --resume to start a run"
            )
        state = load_checkpoint(out / CHECKPOINT)
        fields = _checkpoint_fields(state, out / CHECKPOINT, "sampler", "rng")
        config = fields["config"]
        diffs = _config_differences(config, overrides)
        if diffs:
            raise CheckpointError(f"--resume: options differ from the saved run: {'; '.join(diffs)}")
        if "steps" in overrides and overrides["steps"] <= fields["step"]:
            raise ConfigError(
                f"--steps {overrides['steps']} is not more than the run's step {fields['step']}; "
                "pass a larger --steps to train on"
            )
        config = dataclasses.replace(config, **overrides)
    else:
        if config is None:
            raise ConfigError("a new run needs a config")
        config = _resolve_source(dataclasses.replace(config, **overrides))
        # Only a checkpoint makes a run: a config.json alone is left by a run that failed before its
        # first checkpoint, and starting again is the only way on from it.
        if (out / CHECKPOINT).exists():
            raise CheckpointError(
                f"{out} already holds a run; pass --resume to continue it, or choose another --out"
            )
    config.validate()
    why = _inapplicable(config, set(overrides))
    if why:
        raise ConfigError(why)
    device = resolve_device(config.device)

    corpus = load_corpus(config)
    vocab = corpus.vocab
    if state is not None and fields["vocab"] != vocab:
        raise CheckpointError(f"--resume: the corpus's alphabet changed since {out} was trained")
    spec_model, spec_guide = (
        (fields["model_spec"], fields["guide_spec"])
        if state
        else (model_spec(config, vocab), guide_spec(config, vocab))
    )
    torch.manual_seed(config.seed)
    model, guide = _build(spec_model, spec_guide, device, checkpoint=out / CHECKPOINT if state else None)
    trainer = Trainer(
        model, guide, objective=config.objective, particles=config.particles, lr=config.lr,
        lr_decay=config.lr_decay, total_steps=config.steps, clip_norm=config.clip_norm, jit=config.jit,
    )  # fmt: skip
    if isinstance(corpus, WordCorpus):
        sampler = corpus.sampler(config.batch_size, seed=config.seed, device=device)
        valid = corpus.draw_batch(config.valid_size, seed=config.seed + 1, device=device)
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
    if state is not None:
        _restore(trainer.load_state_dict, state, out / CHECKPOINT)
        _restore(sampler.load_state_dict, fields["sampler"], out / CHECKPOINT)
        _restore(torch.set_rng_state, fields["rng"], out / CHECKPOINT)
        if device.type == "cuda" and "cuda_rng" in state:
            _restore(torch.cuda.set_rng_state_all, state["cuda_rng"], out / CHECKPOINT)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG, asdict(config))
    if state is not None and (out / METRICS).is_file():
        # Steps logged after the checkpoint (before a crash) are trained again: keep only their new lines.
        lines = (out / METRICS).read_text().splitlines(keepends=True)
        kept = [x for x in lines if (step := _logged_step(x)) is not None and step <= trainer.step_count]
        write_text_atomic(out / METRICS, "".join(kept))
    last_valid: dict[str, float] = {}

    def validate() -> dict[str, float]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed + 2)
            loss = trainer.evaluate_loss(valid)
        last_valid.update(valid_loss=loss, step=trainer.step_count)
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
        }
        if device.type == "cuda":
            payload["cuda_rng"] = torch.cuda.get_rng_state_all()
        save_checkpoint(out / CHECKPOINT, payload)

    # A new run starts the log afresh (a run that failed before its first checkpoint may have left one).
    with open(out / METRICS, "a" if state is not None else "w", buffering=1) as metrics:

        def log(record: dict[str, Any]) -> None:
            metrics.write(
                json.dumps({k: v for k, v in record.items() if not isinstance(v, float) or math.isfinite(v)})
                + "\n"
            )

        summary = trainer.fit(
            sampler, steps=config.steps, validate=validate, valid_every=config.valid_every,
            checkpoint=checkpoint, checkpoint_every=config.checkpoint_every, log=log, progress=progress,
            unit="words" if unit == "words" else "seq",
        )  # fmt: skip
    if last_valid.get("step") != trainer.step_count and trainer.step_count > 0:
        validate()  # the summary reports the final model's validation loss, not an earlier one's
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
        "initial_loss": summary["initial_loss"],
        "final_loss": summary["final_loss"],
        "valid_loss": last_valid.get("valid_loss"),
        "loss_unit": "nats per word" if unit == "words" else f"nats per {config.chunk_length}-symbol chunk",
        f"{unit}_per_second": None if rate is None else rate * per_sequence,
        "seconds": summary["seconds"],
        "checkpoint": str(out / CHECKPOINT),
        "interrupted": summary["interrupted"],
    }
    return result
