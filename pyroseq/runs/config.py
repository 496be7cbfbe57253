"""The configuration of a training run and its option rules.

:class:`RunConfig` is what ``pyroseq train`` fills from its options and what a run directory saves as
``config.json``. The rules here say which values are valid (:meth:`RunConfig.validate`), which options
apply to which run (:func:`check_applicable`), which may change on resume (:data:`RESUMABLE`), and which
corpus and device a configuration names (:func:`load_corpus`, :func:`resolve_device`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyroseq.checks import check_clip_norm, check_optimiser
from pyroseq.data.batch import check_seed
from pyroseq.data.polyphonic import NUM_KEYS, PolyphonicCorpus, load_polyphonic
from pyroseq.data.text import TEXT_SOURCES, TextCorpus, load_text
from pyroseq.data.words import WORD_SOURCES, WordCorpus, load_words
from pyroseq.emissions import EMITTER_ACTIVATIONS
from pyroseq.errors import CheckpointError, ConfigError, DeviceError, first_line
from pyroseq.guides import FutureGuide
from pyroseq.infer.annealing import DEFAULT_KL_WARMUP, check_warmup_start, default_kl_warmup
from pyroseq.infer.averaging import check_ema_decay
from pyroseq.infer.objectives import OBJECTIVES, UNANNEALED, check_objective_applies, resolve_recipe
from pyroseq.models import DSSM, RNNLM, ProfessorForcing
from pyroseq.runs.checkpoint import CONFIG

__all__ = [
    "DATA",
    "MODELS",
    "EMITTER_BIASES",
    "TRAINING",
    "CORPUS",
    "INHERITED",
    "SHAPES",
    "RESUMABLE",
    "PATHS",
    "same_path",
    "RunConfig",
    "check_applicable",
    "resume_differences",
    "check_config_file",
    "resolve_device",
    "resolve_source",
    "resolve_kl_warmup",
    "resolve_objective",
    "DEFAULT_KL_WARMUP",
    "load_corpus",
    "corpus_name",
    "DEFAULT_SOURCES",
    "EMISSION_OF_DATA",
    "dmm_config",
    "PRESETS",
]

DATA = ("words", "text", "polyphonic")
# The emission family each kind of data is modelled with, and the length of an observed vector.
EMISSION_OF_DATA = {"words": "categorical", "text": "categorical", "polyphonic": "bernoulli"}
_OBS_DIM = {"polyphonic": NUM_KEYS}
MODELS = ("dssm", "rnn")
EMITTER_BIASES = ("unigram", "default")
TRAINING = ("teacher", "scheduled", "professor")


def _default(cls: type, argument: str) -> Any:
    """The default of ``cls``'s constructor ``argument``: a model or guide option's default is set there
    alone, and a run's configuration takes it from there."""
    return inspect.signature(cls).parameters[argument].default


@dataclass
class RunConfig:
    """Everything that defines a training run; saved as ``config.json`` and inside the checkpoint."""

    # data
    data: str = "words"  # words | text | polyphonic (piano rolls, a Boulanger-Lewandowski pickle)
    source: str | None = None  # a corpus name or a file; default symspell (words) / shakespeare (text)
    top: int | None = None  # words: keep the N most frequent (default 10,000 for symspell)
    max_length: int | None = None  # words: drop longer words (default 12 for named sources)
    chunk_length: int = 64  # text: symbols per training sequence
    # model: each default is the constructor's (the one place it is set; model_spec passes the field on)
    model: str = "dssm"  # dssm | rnn
    state_dim: int = _default(DSSM, "state_dim")  # D, the state size; the RNN's hidden size
    flow: str = _default(DSSM, "flow")  # DSSM transition flow f_G
    flow_hidden: int = _default(DSSM, "flow_hidden")
    emitter_hidden: int = _default(DSSM, "emitter_hidden")  # 0: a linear emitter
    emitter_layers: int = _default(DSSM, "emitter_layers")  # the emitter's hidden layers
    emitter_activation: str = _default(DSSM, "emitter_activation")  # tanh | relu
    guide: str = "future"  # future | gaussian
    guide_flow: str = _default(FutureGuide, "flow")  # the guide's own flow f_Q ("none" for none)
    guide_hidden: int = _default(FutureGuide, "rnn_hidden")  # the guide's backward-RNN size
    guide_cell: str = _default(FutureGuide, "rnn_cell")  # the guide's backward RNN: gru | relu
    cell: str = _default(RNNLM, "cell")  # rnn: gru | lstm
    embed_dim: int = _default(RNNLM, "embed_dim")
    layers: int = _default(RNNLM, "num_layers")
    training: str = "teacher"  # rnn: teacher | scheduled | professor
    schedule: str = "invsigmoid"  # scheduled sampling: linear | exp | invsigmoid
    schedule_k: float | None = None  # the schedule's rate (default: set from --steps)
    adversarial_weight: float = _default(ProfessorForcing, "adversarial_weight")  # professor forcing
    # a run directory whose model and guide weights a new run starts from (see INHERITED)
    init_from: str | None = None
    init_from_step: int | None = None  # the step of init_from's checkpoint (set by train_run, not an option)
    # a new run's emitter output bias: the symbols' log unigram frequencies in the training data
    # (init_emitter_bias, every model alike) or "default", nn.Linear's own draw (runs saved before the option)
    emitter_bias: str = "unigram"
    # optimisation
    # elbo | iwae | dreg | fivo; None, in a new run: dreg for a DSSM, elbo for an RNN (see resolve_objective)
    objective: str | None = None
    particles: int | None = (
        None  # K; None, in a new run: DEFAULT_PARTICLES for a DSSM's iwae/dreg/fivo, else 1
    )
    # dssm: KL annealing over this many steps (0: none). None, in a new run: DEFAULT_KL_WARMUP steps, or
    # half of --steps if that is fewer, and none from --init-from or for fivo (see resolve_kl_warmup); a run
    # saved before the option: none.
    kl_warmup: int | None = None
    kl_warmup_start: float = 0.0  # dssm: the KL annealing factor the warm-up starts from (Pyro's DMM: 0.2)
    steps: int = 1000
    batch_size: int = 64  # per process: --devices N trains on N * batch_size sequences a step
    lr: float = 6e-3
    lr_decay: float = 0.1  # the learning rate decays geometrically to lr * lr_decay at the first --steps
    clip_norm: float = 10.0  # 0: no clipping
    weight_decay: float = 0.0  # Adam's L2 penalty on the loss per sequence (Trainer)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates
    ema: float = 0.0  # the decay of the parameters' moving average (Trainer(ema=...)); 0: none
    jit: bool = False
    device: str = "cpu"
    devices: int = 1  # processes per node (GPUs with --device cuda), data-parallel
    num_nodes: int = 1
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
            ("emitter_bias", EMITTER_BIASES),
            ("emitter_activation", tuple(EMITTER_ACTIVATIONS)),
        ):
            if getattr(self, name) not in valid and not (name == "objective" and self.objective is None):
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}: use one of {', '.join(valid)}")
        positive = ("state_dim", "flow_hidden", "emitter_layers", "guide_hidden", "embed_dim", "layers",
                    "particles", "steps", "batch_size", "chunk_length", "valid_size", "devices",
                    "num_nodes")  # fmt: skip
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}", params=(name,))
        for name in ("valid_every", "checkpoint_every", "emitter_hidden", "kl_warmup"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}", params=(name,))
        check_warmup_start(self.kl_warmup_start)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}", params=("lr",))
        check_clip_norm(self.clip_norm)
        check_optimiser(weight_decay=self.weight_decay, betas=self.betas)
        check_ema_decay(self.ema, name="ema", allow_off=True)
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}", params=("lr_decay",))
        check_seed(self.seed)
        if self.model == "rnn" and self.objective in ("iwae", "dreg") and (self.particles or 1) > 1:
            raise ConfigError(
                f"the RNN has no latent variables: {self.objective.upper()} with K > 1 is the same as the "
                "exact ELBO",
                params=("objective", "particles"),
            )
        if self.objective is not None:
            check_objective_applies(
                self.objective,
                states=self.model == "dssm",
                kl_warmup=self.kl_warmup or 0,
                who=f"model {self.model}",
            )
        if self.data == "polyphonic" and self.source is None:
            raise ConfigError(
                "data polyphonic needs source, the pickle to train on (pyroseq train --file PATH; e.g. "
                "jsb_chorales.pickle from github.com/pyro-ppl/datasets, polyphonic/)",
                params=("source", "data"),
            )
        if self.world_size > 1 and self.training == "professor" and self.model == "rnn":
            raise ConfigError(
                "training professor updates its discriminator outside the SVI step, which data-parallel "
                "training does not average: train it with devices=1 num_nodes=1",
                params=("training", "devices", "num_nodes"),
            )

    @property
    def emission(self) -> str:
        """The emission family the data calls for: ``categorical`` (symbols) or ``bernoulli`` (frames)."""
        return EMISSION_OF_DATA[self.data]

    @property
    def obs_dim(self) -> int | None:
        """F, the length of each observed frame (88 keys for polyphonic data); None for symbols."""
        return _OBS_DIM.get(self.data)

    @property
    def world_size(self) -> int:
        """The number of training processes, ``devices * num_nodes``."""
        return self.devices * self.num_nodes

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The configuration saved as ``data``; an option this version does not know is a
        :class:`CheckpointError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(
                f"config has unknown options {unknown}: written by another pyroseq version?"
            )
        if "betas" in data:  # JSON keeps the pair as a list
            data = {**data, "betas": tuple(data["betas"])}
        return cls(**data)


# Options a run started --init-from another takes from that run unless they are given: the data and what
# shapes the model's and guide's weights (and the RNN's training, which the weights were fit under). The
# corpus options (CORPUS) are taken only when no corpus other than its own is named: another --data,
# --source or --file starts them from their defaults, as a new run on it would.
CORPUS = ("source", "top", "max_length", "chunk_length")
SHAPES = ("model", "state_dim", "flow", "flow_hidden", "emitter_hidden", "emitter_layers", "guide",
          "guide_flow", "guide_hidden", "guide_cell", "cell", "embed_dim", "layers", "training")  # fmt: skip
INHERITED = ("data", *CORPUS, *SHAPES, "emitter_activation", "schedule", "schedule_k", "adversarial_weight")

# Options that may change on resume: the length of training, where it runs (on as many processes:
# the run's per-rank word streams continue), how often it logs, and the step size (as
# NonFiniteLossError advises: lower --lr or --clip-norm and resume), and the rest of the optimiser's
# settings.
RESUMABLE = {"steps", "device", "devices", "num_nodes", "valid_every", "checkpoint_every", "lr", "lr_decay",
             "clip_norm", "weight_decay", "betas", "ema"}  # fmt: skip


# Options that name a file or directory, stored absolute (resolve_source; --init-from).
PATHS = ("source", "init_from")


def same_path(stored: Any, given: Any) -> bool:
    """Whether ``given`` names the same file or directory as the ``stored`` (absolute) path."""
    if not isinstance(stored, str) or not isinstance(given, str):
        return False
    return stored == given or Path(stored).resolve() == Path(given).resolve()


def check_config_file(run_dir: Path, config: RunConfig, checkpoint: Path) -> None:
    """Raise :class:`CheckpointError` unless ``run_dir/config.json`` (if present) describes the run whose
    checkpoint holds ``config``: a checkpoint copied over from another run would otherwise be taken for
    this one. Options that a resume may change (:data:`~pyroseq.runs.config.RESUMABLE`) may differ."""
    path = run_dir / CONFIG
    if not path.is_file():
        return
    try:
        on_disk = RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, AttributeError, CheckpointError) as e:
        raise CheckpointError(
            f"{path} is not a pyroseq run config ({first_line(e, limit=120)}); restore it, or delete it to "
            f"trust {checkpoint.name}"
        ) from None
    differ = [
        f.name
        for f in dataclasses.fields(RunConfig)
        if f.name not in RESUMABLE and getattr(on_disk, f.name) != getattr(config, f.name)
    ][:3]
    if differ:
        shown = "; ".join(f"{name} {getattr(on_disk, name)} vs {getattr(config, name)}" for name in differ)
        raise CheckpointError(
            f"{checkpoint} is not the checkpoint of the run {path} describes ({shown}): "
            "it was replaced by another run's; restore the run's own checkpoint, or use the other run's "
            "directory",
            params=differ,
        )


def resume_differences(saved: RunConfig, given: dict[str, Any]) -> list[str]:
    """The options in ``given`` that differ from the saved run's and may not change on resume, each as
    ``option=VALUE (the run has SAVED)``."""
    return [
        f"{k}={v} (the run has {getattr(saved, k)})"
        for k, v in given.items()
        if k not in RESUMABLE and getattr(saved, k) != v
    ]


def check_applicable(config: RunConfig, given: set[str]) -> None:
    """Raise :class:`ConfigError` for the first explicitly given option in ``given`` that has no effect
    on ``config``'s run.

    A given option that would be recorded in ``config.json`` but not used misleads whoever reads the
    run later, so it is refused rather than ignored.
    """
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (("training", "schedule", "schedule_k", "adversarial_weight", "cell", "layers"),
         config.model == "dssm", ("model", "applies to model rnn only")),
        (("flow", "flow_hidden", "emitter_hidden", "emitter_layers", "emitter_activation", "guide",
          "guide_flow", "guide_hidden", "guide_cell", "kl_warmup", "kl_warmup_start"),
         config.model == "rnn", ("model", "applies to model dssm only")),
        (("emitter_layers", "emitter_activation"), config.emitter_hidden == 0,
         ("emitter_hidden", "has no effect on a linear emitter (emitter_hidden=0)")),
        (("kl_warmup_start",), config.kl_warmup == 0,
         ("kl_warmup", "has no effect without a warm-up (kl_warmup=0)")),
        (("top", "max_length"), config.data != "words", ("data", "applies to data words only")),
        (("chunk_length",), config.data != "text", ("data", "applies to data text only")),
        (("guide_flow",), config.guide == "gaussian", ("guide", "has no effect: guide gaussian has no flow")),
        (("schedule", "schedule_k"), config.training != "scheduled",
         ("training", "applies to training scheduled only")),
        (("adversarial_weight",), config.training != "professor",
         ("training", "applies to training professor only")),
    ]  # fmt: skip
    for names, unused, (by, why) in rules:
        for name in names:
            if unused and name in given:
                raise ConfigError(f"{name} {why}", params=(name, by))


def resolve_objective(config: RunConfig) -> RunConfig:
    """``config`` with ``objective`` and ``particles`` set where a new run left them at None, by
    :func:`~pyroseq.infer.objectives.resolve_recipe` (as the ``Trainer`` sets them): DReG with K = 8 for a
    DSSM, the ELBO with K = 1 for an RNN or under ``jit``; IWAE, DReG or FIVO named without ``particles``
    for a DSSM gets K = 8."""
    objective, k = resolve_recipe(config.objective, config.particles, latent=config.model == "dssm",
                                  jit=config.jit)  # fmt: skip
    return dataclasses.replace(config, objective=objective, particles=k)


def resolve_kl_warmup(config: RunConfig) -> RunConfig:
    """``config`` with ``kl_warmup`` set: for a DSSM left at None, :data:`DEFAULT_KL_WARMUP` steps or half of
    ``steps`` if that is fewer (so the bound is the ordinary one for the second half of any run); 0 for an
    RNN, which has no latent sites, under ``--jit``, whose trace would freeze the factor (an explicit
    ``--kl-warmup`` with ``--jit`` is refused by the Trainer), for an objective that cannot be annealed
    (FIVO), and for a run that starts ``--init-from`` trained weights, whose states are in use already."""
    if config.kl_warmup is not None:
        return config
    annealed = config.model == "dssm" and not config.jit and config.init_from is None
    annealed = annealed and config.objective not in UNANNEALED
    warmup = default_kl_warmup(config.steps) if annealed else 0
    return dataclasses.replace(config, kl_warmup=warmup)


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda[:N]``; :class:`DeviceError` when CUDA is asked for and absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device={name} was asked for but no CUDA GPU is available to PyTorch "
            f"(torch {torch.__version__}); use device=cpu",
            params=("device",),
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}: use cpu or cuda")
    return device


DEFAULT_SOURCES = {"words": "symspell", "text": "shakespeare"}


def resolve_source(config: RunConfig) -> RunConfig:
    """Store a corpus file as an absolute path, so the run can be loaded again from another directory."""
    named = {"words": WORD_SOURCES, "text": TEXT_SOURCES}.get(config.data, {})
    if config.source is None or config.source in named or not Path(config.source).is_file():
        return config
    return dataclasses.replace(config, source=str(Path(config.source).resolve()))


def load_corpus(config: RunConfig) -> WordCorpus | TextCorpus | PolyphonicCorpus:
    """The corpus that ``config`` names (symspell words or Shakespeare by default; a polyphonic pickle)."""
    _, source = corpus_name(config)
    if config.data == "words":
        return load_words(source, top=config.top, max_length=config.max_length)
    if config.data == "polyphonic":
        return load_polyphonic(source)
    return load_text(source)


def corpus_name(config: RunConfig) -> tuple[str, str | None]:
    """``(data, source)``: the corpus ``config`` names, its default source filled in (a file as given)."""
    return config.data, config.source or DEFAULT_SOURCES.get(config.data)


def dmm_config(**overrides: Any) -> RunConfig:
    """The Deep Markov Model of Krishnan, Shalit & Sontag (AAAI 2017) at the sizes of Pyro's
    ``examples/dmm.py``, as a DSSM run on polyphonic music.

    The transition is the ``gated`` flow (Krishnan's gated transition) with 200 hidden units, the state
    has 100 dimensions, the emitter 100 hidden units, and the guide is the combiner guide without a flow
    (``gaussian``: a backward RNN of 600 units over the frames, combined with ``h_{t-1}``), trained by the
    ELBO with one particle (the example's ``Trace_ELBO``, not the DSSM's default DReG with eight) with
    Adam at ``3e-4`` on batches of 20 sequences with KL annealing, and without clipping the gradient
    (``clip_norm=0``: on a chorale's loss its norm is 300-500, so the library's clip at 10 normalised every
    step, and the preset trailed the example by 0.24 nats per frame at epoch 600; unclipped it is level
    with the example at epoch 450 and 0.14 behind at 600, docs/results.md). Where pyroseq differs from
    the example: the emitter has one tanh hidden layer (the example's two ReLU layers, ``emitter_layers=2,
    emitter_activation="relu"``, were slower over the 180 epochs measured), the guide's backward RNN (a
    plain ReLU RNN, as the example's) reads a linear map of each frame (the example's reads the frame), the
    optimiser is pyroseq's Adam with betas (0.9, 0.999) on the loss per sequence (the example's
    ``ClippedAdam`` has betas (0.96, 0.999), clips each gradient element at 10 and decays weights by 2.0,
    on the loss summed over the batch), and the KL warm-up is pyroseq's (linear from
    ``1/N`` to 1 over N steps; the example's from 0.2 over 1,000 epochs, which ``kl_warmup=12_000,
    kl_warmup_start=0.2`` gives: measured beside the example in docs/results.md, it follows the example's
    first 150 epochs and is no better at 600).

    Args:
        overrides: :class:`RunConfig` fields to set, e.g. ``source="jsb_chorales.pickle"``.

    Example:
        >>> config = dmm_config(source="jsb_chorales.pickle", steps=10)
        >>> config.state_dim, config.flow, config.guide, config.guide_hidden, config.emission
        (100, 'gated', 'gaussian', 600, 'bernoulli')
        >>> resolve_objective(config).objective, resolve_objective(config).particles
        ('elbo', 1)
    """
    sizes = {"data": "polyphonic", "model": "dssm", "state_dim": 100, "flow": "gated", "flow_hidden": 200,
             "emitter_hidden": 100, "guide": "gaussian", "guide_flow": "none", "guide_hidden": 600,
             "guide_cell": "relu", "objective": "elbo",
             "embed_dim": NUM_KEYS, "lr": 3e-4, "batch_size": 20, "clip_norm": 0.0}  # fmt: skip
    return dataclasses.replace(RunConfig(), **{**sizes, **overrides})


PRESETS = {"dmm": dmm_config}
"""Named configurations (``pyroseq train --preset NAME``): name -> a function of :class:`RunConfig`
overrides."""
