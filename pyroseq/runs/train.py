"""Training runs: from a configuration to a trained model in a run directory.

This is what ``pyroseq train`` calls. The pieces live beside it: the configuration and its option rules
in :mod:`pyroseq.runs.config`, the model and guide specs in :mod:`pyroseq.runs.specs`, the run
directory's files in :mod:`pyroseq.runs.rundir`, the loop in :mod:`pyroseq.infer.trainer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from pyroseq.checks import format_bytes
from pyroseq.data.batch import Batch, SequenceBatch
from pyroseq.data.polyphonic import PolyphonicCorpus
from pyroseq.data.text import TextCorpus
from pyroseq.data.words import WordCorpus
from pyroseq.errors import CheckpointError, ConfigError, ResourceError, first_line
from pyroseq.infer.trainer import Trainer
from pyroseq.models.init import init_emitter_bias, init_frame_bias
from pyroseq.runs.checkpoint import CHECKPOINT, remove_stale_temporaries
from pyroseq.runs.config import (
    CORPUS,
    INHERITED,
    PATHS,
    SHAPES,
    RunConfig,
    check_applicable,
    corpus_name,
    load_corpus,
    resolve_device,
    resolve_kl_warmup,
    resolve_objective,
    resolve_source,
    resume_differences,
    same_path,
)
from pyroseq.runs.distributed import gather_objects, launch, launched_externally, leads_run, rank_seed
from pyroseq.runs.guard import claim_new_run, lock_run, training_holder
from pyroseq.runs.memory import check_training_memory
from pyroseq.runs.rundir import (
    MetricsLog,
    SavedRun,
    check_same_data,
    corpus_fingerprint,
    read_run_checkpoint,
    save_run_checkpoint,
    trim_metrics,
    write_config,
)
from pyroseq.runs.specs import build_from_specs, guide_spec, model_spec

__all__ = ["train_run"]


def _resumed(out: Path, overrides: dict[str, Any]) -> tuple[SavedRun, RunConfig]:
    """The checkpoint in ``out`` and its config with ``overrides`` applied, checked against the resume
    rules (only :data:`~pyroseq.runs.config.RESUMABLE` options change; ``steps`` only grows)."""
    saved = read_run_checkpoint(out / CHECKPOINT, require=("sampler", "rng"))
    # A corpus file or source run named again by another path (relative, through a link) is no change.
    overrides = {
        k: v for k, v in overrides.items() if not (k in PATHS and same_path(getattr(saved.config, k), v))
    }
    diffs = resume_differences(saved.config, overrides)
    if diffs:
        raise CheckpointError(
            f"resume=True: options differ from the saved run: {'; '.join(diffs)}",
            params=("resume", *overrides),
        )
    if "steps" in overrides and overrides["steps"] <= saved.step:
        raise ConfigError(
            f"steps={overrides['steps']} is not more than the run's step {saved.step}; "
            "pass a larger steps to train on",
            params=("steps",),
        )
    config = saved.config
    if config.kl_warmup is None:  # saved before the option existed: trained without warm-up
        config = dataclasses.replace(config, kl_warmup=0)
    return saved, dataclasses.replace(config, **overrides)


def _fresh(config: RunConfig | None, overrides: dict[str, Any]) -> RunConfig:
    """The config of a new run: ``config`` with ``overrides`` applied, and, when it starts from another
    run's weights, the :data:`~pyroseq.runs.config.INHERITED` options neither given in ``overrides`` nor
    set away from their defaults taken from that run (the corpus options only when no corpus other
    than its own is named), its path made absolute and the step of its checkpoint recorded."""
    if config is None:
        raise ConfigError("a new run needs a config")
    config = dataclasses.replace(config, **overrides)
    if config.init_from is not None:
        source, defaults = _init_source(config.init_from), RunConfig()
        # Another corpus named (by --data, --source or --file) takes none of the source's corpus options.
        named = {
            name: getattr(config, name)
            for name in ("data", "source")
            if name in overrides or getattr(config, name) != getattr(defaults, name)
        }
        other_corpus = bool(named) and corpus_name(
            resolve_source(dataclasses.replace(source.config, **named))
        ) != corpus_name(source.config)
        taken = {
            name: getattr(source.config, name)
            for name in INHERITED
            if name not in overrides
            and getattr(config, name) == getattr(defaults, name)
            and not (other_corpus and name in CORPUS)
        }
        where = str(source.path if Path(config.init_from).is_file() else source.path.parent)
        config = dataclasses.replace(config, **taken, init_from=where, init_from_step=source.step)
    return resolve_objective(resolve_kl_warmup(resolve_source(config)))


def _init_source(path: str) -> SavedRun:
    """The checkpoint that ``--init-from`` names: a run directory's (checked against its ``config.json``,
    as :func:`~pyroseq.runs.rundir.load_run` checks it), or a checkpoint file."""
    given = Path(path).resolve()
    checkpoint = given if given.is_file() else given / CHECKPOINT
    if not checkpoint.is_file():
        raise CheckpointError(
            f"init_from={path}: no {CHECKPOINT} there; name a run directory written by pyroseq train "
            "(or by save_run), or its checkpoint file",
            params=("init_from",),
        )
    return read_run_checkpoint(checkpoint)


def _load_weights(config: RunConfig, model: Any, guide: Any, vocab: Any) -> tuple[int, str | None]:
    """Load the model's and guide's weights (only those: not the optimiser's state, the step or the
    schedules, which a new run starts afresh) from the run ``config.init_from``, at the step
    :func:`_fresh` recorded; return that step and, if the source run is training now, the process
    training it."""
    path = str(config.init_from)
    source = _init_source(path)
    if source.step != config.init_from_step:
        raise CheckpointError(
            f"init_from={path}: its checkpoint moved from step {config.init_from_step} to {source.step} "
            "while this run started (it is training); start from a run that is not, or from a copy of it",
            params=("init_from",),
        )
    if source.vocab != vocab:
        sizes = ["frames" if v is None else str(len(v)) for v in (source.vocab, vocab)]  # frames: no symbols
        raise CheckpointError(
            f"init_from={path}: that run's symbols differ from this run's corpus's ({sizes[0]} against "
            f"{sizes[1]}), so its weights mean other symbols here; train on its corpus",
            params=("init_from",),
        )
    try:
        model.load_state_dict(source.state["model"])
        if isinstance(guide, torch.nn.Module):
            guide.load_state_dict(source.state["guide"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        ours, theirs = config, source.config
        differ = [
            f"{name}={getattr(ours, name)} (that run has {getattr(theirs, name)})"
            for name in SHAPES
            if getattr(ours, name) != getattr(theirs, name)
        ]
        why = "; ".join(differ) if differ else first_line(e, limit=160)
        raise CheckpointError(
            f"init_from={path}: its weights do not fit this run's model and guide: {why}; leave the "
            "options that shape them at that run's values",
            params=("init_from", *SHAPES),
        ) from None
    return source.step, training_holder(source.path.parent)


def _training_data(
    config: RunConfig, corpus: WordCorpus | TextCorpus | PolyphonicCorpus, device: torch.device, *, rank: int
) -> tuple[Any, SequenceBatch, str, float]:
    """The batch sampler (rank ``rank``'s word stream), the validation batch, the unit of throughput and
    symbols per sequence."""
    seed = rank_seed(config.seed, rank)
    if isinstance(corpus, PolyphonicCorpus):
        # each batch as long as its longest chorale, or of one shape for a JIT-compiled loss
        pad_to = "split" if config.jit else "batch"
        sampler = corpus.train.sampler(config.batch_size, seed=seed, device=device, pad_to=pad_to)
        valid = corpus.valid.batch(range(min(config.valid_size, len(corpus.valid))), device=device)
        return sampler, valid, "sequences", 1.0
    if isinstance(corpus, WordCorpus):
        sampler = corpus.sampler(config.batch_size, seed=seed, device=device)
        valid = corpus.draw_batch(config.valid_size, seed=config.seed + 1, device=device)
        return sampler, valid, "words", 1.0
    sampler = corpus.sampler(config.batch_size, length=config.chunk_length, seed=seed, device=device)
    chunks = corpus.chunks("valid", config.chunk_length)
    n = config.valid_size
    valid = Batch(chunks.ids[:n], chunks.mask[:n], chunks.lengths[:n]).to(device)
    return sampler, valid, "symbols", float(config.chunk_length)


def _probe(config: RunConfig, corpus: WordCorpus | TextCorpus | PolyphonicCorpus) -> SequenceBatch:
    """Two training sequences of the run's length, on which a step's memory is measured."""
    if isinstance(corpus, PolyphonicCorpus):
        return corpus.train.batch(range(min(2, len(corpus.train))))  # padded to the longest, as batches are
    if isinstance(corpus, WordCorpus):
        return corpus.batch(list(range(min(2, len(corpus)))))  # padded to the longest word, as batches are
    chunks = corpus.chunks("train", config.chunk_length)
    return Batch(chunks.ids[:2], chunks.mask[:2], chunks.lengths[:2])


def _unigram_emitter_bias(model: torch.nn.Module, corpus: Any) -> None:
    """Start the emitter at the training data's unigram law: the symbols' frequencies (words weighted by
    p(w)), or each key's frequency for a Bernoulli model of frames (other emissions keep their draw)."""
    if isinstance(corpus, WordCorpus):
        init_emitter_bias(
            model, corpus.batch().ids, weights=torch.as_tensor(corpus.counts, dtype=torch.float64)
        )
    elif isinstance(corpus, TextCorpus):
        init_emitter_bias(model, corpus.ids("train"))
    elif getattr(model, "emission", None) == "bernoulli":
        init_frame_bias(model, torch.cat(corpus.train.rolls))


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
        config: the configuration of a new run (ignored on resume, where the checkpoint's is used).
            With ``init_from`` (a run directory, or its checkpoint file) the new run starts from that run's
            model and guide weights, with a fresh optimiser, step count and schedules (and no KL warm-up
            unless ``kl_warmup`` is set): to train on under another objective (IWAE with more particles), step
            size or horizon. Its data and model options (:data:`~pyroseq.runs.config.INHERITED`) are that
            run's, except those given in ``overrides`` or set away from their defaults (and the corpus
            options, :data:`~pyroseq.runs.config.CORPUS`, when a corpus other than its own is named), which
            must fit its weights (its vocabulary, too), or it is a :class:`CheckpointError`. The path is
            recorded absolute, with ``init_from_step``, the step of the checkpoint the weights came from.
        out: the run directory. A new run goes only into a new or empty directory, or one where a
            pyroseq run failed before its first checkpoint (:func:`~pyroseq.runs.guard.claim_new_run`);
            while a run trains, its directory is locked against other processes
            (:func:`~pyroseq.runs.guard.lock_run`).
        resume: continue from ``out/checkpoint.pt``. ``overrides`` may change ``steps`` (to train
            longer, past the run's step), ``device``, the logging intervals, the step size: ``lr``,
            ``lr_decay`` and ``clip_norm`` (to get past non-finite losses), Adam's ``weight_decay`` and
            ``betas``, and ``ema`` (a new decay goes on from the saved average; a run saved without one
            starts its average at the resumed weights); any other differing option is an error. Metrics
            logged after the checkpoint (by a run that crashed) are dropped.
        overrides: the options given explicitly (the command line's); one that does not apply to the
            run (``--cell`` for the DSSM, ``--top`` for text, ...) is a :class:`ConfigError`.

    Returns:
        a summary: ``steps``, ``initial_loss``, ``final_loss`` (per sequence, the means of the run's
        first and last 20 steps), ``words_per_second`` (word data), ``symbols_per_second`` (text) or
        ``sequences_per_second`` (polyphonic music), ``checkpoint``, ``valid_loss`` (at the final step; per
        frame on polyphonic music, where ``loss_unit`` says so), ``interrupted`` and ``stopped_by`` (the
        signal that stopped it, ``"SIGINT"`` or ``"SIGTERM"``, or None), ``corpus`` (the corpus
        fingerprint the checkpoint records) and ``notes`` (sentences for the user: what the corpus's
        filters dropped, damaged metrics lines skipped).
    """
    out = Path(out)
    overrides = overrides or {}
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise CheckpointError(
                f"resume=True: {out} holds no checkpoint to resume; drop resume=True to start a run",
                params=("resume",),
            )
        # Of a run on several nodes (or under torchrun), the first process claims and locks the directory.
        with lock_run(out) if leads_run() else contextlib.nullcontext():
            if leads_run():
                remove_stale_temporaries(out)  # left by a kill -9 during a checkpoint write
            saved, config = _resumed(out, overrides)
            return _launch(config, out, saved, overrides, progress)
    config = _fresh(config, overrides)
    config.validate()  # before the directory is claimed: a mistyped option leaves nothing behind
    with claim_new_run(out) if leads_run() else contextlib.nullcontext():
        if leads_run():
            remove_stale_temporaries(out)  # of a run that was killed writing its first checkpoint
        return _launch(config, out, None, overrides, progress)


def _launch(
    config: RunConfig, out: Path, saved: SavedRun | None, overrides: dict[str, Any], progress: bool | None
) -> dict[str, Any]:
    """:func:`_train` on this process, or on each of ``config.world_size`` data-parallel ranks."""
    config.validate()
    check_applicable(config, set(overrides))
    device = resolve_device(config.device)
    if saved is not None and saved.config.world_size != config.world_size:
        raise CheckpointError(
            f"resume=True: the run trains on {saved.config.world_size} processes (devices="
            f"{saved.config.devices} num_nodes={saved.config.num_nodes}), each with its own word stream; "
            "resume it on as many",
            params=("resume", "devices", "num_nodes"),
        )
    if config.world_size == 1 and not launched_externally():
        return _train(None, config, out, saved, progress)
    return launch(
        _train, config, out, saved, progress, devices=config.devices, num_nodes=config.num_nodes,
        device=device,
    )  # fmt: skip


def _train(
    fabric: Any, config: RunConfig, out: Path, saved: SavedRun | None, progress: bool | None
) -> dict[str, Any]:
    """:func:`train_run` in the locked directory ``out``, resuming ``saved`` if given: on one process
    (``fabric`` None) or on one rank of ``fabric``'s (rank 0 writes the run directory)."""
    rank, world = (0, 1) if fabric is None else (fabric.global_rank, fabric.world_size)
    device = resolve_device(config.device) if fabric is None else fabric.device

    corpus = load_corpus(config)
    vocab = corpus.vocab
    if saved is not None and saved.vocab != vocab:
        raise CheckpointError(
            f"resume=True: the corpus's alphabet changed since {out} was trained", params=("resume",)
        )
    if saved is not None:
        check_same_data(saved.data, corpus, doing="resuming")
    data = corpus_fingerprint(corpus)
    specs = (
        (saved.model_spec, saved.guide_spec)
        if saved
        else (model_spec(config, vocab), guide_spec(config, vocab))
    )
    torch.manual_seed(config.seed)  # the same initial parameters on every rank
    try:
        model, guide = build_from_specs(*specs, device=device, saved_in=saved.path if saved else None)
    except RuntimeError as e:  # the allocator refuses, before allocating, sizes that cannot fit
        if "can't allocate memory" not in str(e) and not isinstance(e, torch.OutOfMemoryError):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(e))
        what = (
            f"one of their tensors needs {format_bytes(int(asked[1]))}" if asked else first_line(e, limit=160)
        )
        raise ResourceError(
            f"the model's parameters do not fit in memory ({what}, which the allocator refused): lower "
            "state_dim or the hidden sizes",
            params=("state_dim",),
        ) from None
    started_from = None
    if saved is None and config.init_from is not None:
        started_from = _load_weights(config, model, guide, vocab)
    elif saved is None and config.emitter_bias == "unigram":
        _unigram_emitter_bias(model, corpus)
    trainer = Trainer(
        model, guide, objective=config.objective, particles=config.particles, lr=config.lr,
        lr_decay=config.lr_decay, total_steps=config.steps, clip_norm=config.clip_norm, jit=config.jit,
        weight_decay=config.weight_decay, betas=config.betas, ema=config.ema, kl_warmup=config.kl_warmup,
        kl_warmup_start=config.kl_warmup_start, fabric=fabric,
    )  # fmt: skip
    check_training_memory(
        model, guide, _probe(config, corpus).to(device), objective=config.objective,
        batch_size=config.batch_size, particles=config.particles, device=device,
    )  # fmt: skip
    torch.manual_seed(rank_seed(config.seed, rank))  # each rank its own guide noise
    sampler, valid, unit, per_sequence = _training_data(config, corpus, device, rank=rank)
    if saved is not None:
        saved.restore(trainer.load_state_dict, saved.state)
        own = saved.state["ranks"][rank] if "ranks" in saved.state else saved.state
        saved.restore(sampler.load_state_dict, own["sampler"])
        saved.restore(torch.set_rng_state, own["rng"])
        if device.type == "cuda" and "cuda_rng" in saved.state:
            saved.restore(torch.cuda.set_rng_state_all, saved.state["cuda_rng"])
    notes = list(corpus.notes)
    if started_from is not None and started_from[1] is not None:
        notes.append(
            f"{config.init_from} is being trained ({started_from[1]}): this run started from its checkpoint "
            f"at step {started_from[0]}, which that run will overwrite (config.json records the step)"
        )
    if rank == 0:
        write_config(out, config)
        if saved is not None:
            notes += trim_metrics(out, trainer.step_count)
    last_valid: dict[str, float] = {}
    # Frames are validated per frame (the NLL per time step of Pyro's DMM), words and chunks per sequence.
    valid_scale = len(valid) / valid.num_frames if isinstance(corpus, PolyphonicCorpus) else 1.0

    def validate() -> dict[str, float]:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed + 2)
            loss = trainer.evaluate_loss(valid) * valid_scale
        last_valid.update(valid_loss=loss, step=trainer.step_count)
        return {"valid_loss": loss}

    def checkpoint() -> None:
        ranks = gather_objects(fabric, {"sampler": sampler.state_dict(), "rng": torch.get_rng_state()})
        if rank == 0:
            save_run_checkpoint(
                out, trainer.state_dict(), config=config, vocab=vocab, model_spec=specs[0],
                guide_spec=specs[1], sampler_state=sampler.state_dict(), device=device, data=data,
                rank_states=ranks if world > 1 else None,
            )  # fmt: skip

    # Rank 0 validates, logs and shows progress; the others only train (and join each checkpoint).
    with MetricsLog(out, append=saved is not None) if rank == 0 else contextlib.nullcontext() as log:
        summary = trainer.fit(
            sampler, steps=config.steps, validate=validate if rank == 0 else None,
            valid_every=config.valid_every, checkpoint=checkpoint, checkpoint_every=config.checkpoint_every,
            log=log, progress=progress if rank == 0 else False, unit="words" if unit == "words" else "seq",
        )  # fmt: skip
    if rank == 0 and last_valid.get("step") != trainer.step_count and trainer.step_count > 0:
        validate()  # the summary reports the final model's validation loss, not an earlier one's
    rate = summary["sequences_per_second"]
    rate = None if rate is None else rate * world  # every rank trains on as many sequences
    return {
        "run_dir": str(out),
        "model": specs[0]["name"],
        "data": config.data,
        "objective": config.objective,
        "particles": config.particles,
        "init_from": config.init_from,
        "init_from_step": config.init_from_step,
        "steps": summary["steps"],
        "steps_this_run": summary["steps_this_run"],
        "batch_size": config.batch_size,
        "processes": world,
        "initial_loss": summary["initial_loss"],
        "final_loss": summary["final_loss"],
        "valid_loss": last_valid.get("valid_loss"),
        "loss_unit": {"words": "nats per word", "sequences": "nats per sequence; valid: nats per frame"}.get(
            unit, f"nats per {config.chunk_length}-symbol chunk"
        ),
        f"{unit}_per_second": None if rate is None else rate * per_sequence,
        "seconds": summary["seconds"],
        "checkpoint": str(out / CHECKPOINT),
        "interrupted": summary["interrupted"],
        "stopped_by": summary["stopped_by"],
        "corpus": data,
        "notes": notes,
    }
