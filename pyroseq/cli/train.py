"""``pyroseq train``: train a DSSM or a teacher-forced baseline into a run directory."""

from __future__ import annotations

import dataclasses
import signal
from typing import Any

import click
from click.core import ParameterSource

from pyroseq.cli.common import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_FLOAT,
    SEED,
    Finite,
    corpus_source,
    emit,
    handle_errors,
    json_option,
    threads_option,
)
from pyroseq.emissions import EMITTER_ACTIVATIONS
from pyroseq.errors import ConfigError
from pyroseq.guides import RNN_CELLS
from pyroseq.infer.objectives import DEFAULT_PARTICLES, OBJECTIVES
from pyroseq.runs.config import DATA, EMITTER_BIASES, MODELS, PRESETS, TRAINING, RunConfig
from pyroseq.runs.train import train_run

_DEFAULTS = RunConfig()

# (option, RunConfig field, click type, help). Defaults come from RunConfig.
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", click.Choice(MODELS), "dssm: the deep state-space model; rnn: teacher-forced baselines."),
    ("--data", "data", click.Choice(DATA), "words: single words against p(w); text: running text; polyphonic: piano rolls (a pickle, --file)."),
    ("--source", "source", str, "Corpus name (symspell, german, shakespeare, sample) or a file [default: by --data]."),
    ("--file", "source", str, "A user's corpus file (same as --source PATH)."),
    ("--top", "top", POSITIVE, "Words: keep the N most frequent [default: 10000 for symspell and german]."),
    ("--max-length", "max_length", POSITIVE, "Words: drop words longer than this."),
    ("--chunk-length", "chunk_length", POSITIVE, "Text: symbols per training sequence."),
    ("--state-dim", "state_dim", POSITIVE, "State size D (the RNN's hidden size)."),
    ("--flow", "flow", str, "DSSM transition flow: diagonal, triangular, coupling, spline, rqspline, gated, or a+b."),
    ("--flow-hidden", "flow_hidden", POSITIVE, "Hidden units of the flows' conditioners."),
    ("--emitter-hidden", "emitter_hidden", NON_NEGATIVE, "Hidden units of the emitter (0: linear)."),
    ("--emitter-layers", "emitter_layers", POSITIVE, "DSSM: hidden layers of the emitter, each of --emitter-hidden units [default: 1; Pyro's DMM example: 2]."),
    ("--emitter-activation", "emitter_activation", click.Choice(tuple(EMITTER_ACTIVATIONS)), "DSSM: the emitter's nonlinearity [default: tanh; Pyro's DMM example: relu]."),
    ("--guide", "guide", str, "DSSM guide: future (with its own flow) or gaussian (no flow)."),
    ("--guide-flow", "guide_flow", str, "The guide's flow (a flow name, or none)."),
    ("--guide-hidden", "guide_hidden", POSITIVE, "Size of the guide's backward RNN."),
    ("--guide-cell", "guide_cell", click.Choice(list(RNN_CELLS)), "The guide's backward RNN: gru, or relu (the plain ReLU RNN of Pyro's Deep Markov Model)."),
    ("--cell", "cell", click.Choice(["gru", "lstm"]), "RNN cell."),
    ("--embed-dim", "embed_dim", POSITIVE, "RNN symbol-embedding size."),
    ("--layers", "layers", POSITIVE, "RNN layers."),
    ("--training", "training", click.Choice(TRAINING), "RNN training: teacher forcing, scheduled sampling, professor forcing."),
    ("--schedule", "schedule", click.Choice(["linear", "exp", "invsigmoid"]), "Scheduled sampling's decay of the teacher probability."),
    ("--schedule-k", "schedule_k", POSITIVE_FLOAT, "The schedule's rate parameter (default: set from --steps)."),
    ("--adversarial-weight", "adversarial_weight", Finite(min=0), "Professor forcing: weight of the generator's adversarial term."),
    ("--init-from", "init_from", str, "A new run starting from the weights of the run in this directory (or of this checkpoint file): its data and model options unless given, a fresh optimiser, step count and schedules, no KL warm-up unless given."),
    ("--emitter-bias", "emitter_bias", click.Choice(EMITTER_BIASES), "A new run's emitter output bias: unigram (the symbols' log frequencies in the training data, every model alike) or default (nn.Linear's own draw)."),
    ("--objective", "objective", click.Choice(OBJECTIVES), "elbo (Trace_ELBO), iwae (the importance-weighted bound, K = --particles), dreg (IWAE with doubly reparameterised guide gradients) or fivo (a particle filter's bound, the guide proposing; dssm only, no --kl-warmup: continue a warmed-up run with --init-from) [default: dreg for dssm, elbo for rnn]."),
    ("--particles", "particles", POSITIVE, f"K, the number of vectorised particles [default: {DEFAULT_PARTICLES} for dssm's dreg, iwae or fivo, else 1]."),
    ("--kl-warmup", "kl_warmup", NON_NEGATIVE, "DSSM: KL annealing over N steps, the latent sites scaled by min(1, step/N) (0: none; default 500, or half of --steps if fewer)."),
    ("--kl-warmup-start", "kl_warmup_start", Finite(min=0, max=1), "DSSM: the annealing factor the warm-up starts from, s + (1 - s) min(1, step/N) [default: 0; Pyro's DMM example: 0.2]."),
    ("--steps", "steps", POSITIVE, "Total optimisation steps (on --resume: train on to this many; see below)."),
    ("--batch-size", "batch_size", POSITIVE, "Sequences per step and process."),
    ("--lr", "lr", POSITIVE_FLOAT, "Adam's initial learning rate."),
    ("--lr-decay", "lr_decay", Finite(min=0, max=1, min_open=True), "The learning rate decays geometrically to lr * lr_decay at --steps."),
    ("--clip-norm", "clip_norm", Finite(min=0), "Clip the gradient to this norm (0: no clipping; the norm is per sequence, in the hundreds on chorales, where --preset dmm does not clip)."),
    ("--weight-decay", "weight_decay", Finite(min=0), "Adam's L2 penalty on the loss per sequence (Pyro's DMM example's 2.0 on a batch of 20 summed is 0.1 here)."),
    ("--ema", "ema", Finite(min=0, max=1, max_open=True), "Keep an exponential moving average of the parameters with this decay (e.g. 0.995; 0: none): validation and the saved model use the averaged weights, training goes on from the raw ones."),
    ("--betas", "betas", click.Tuple([Finite(min=0, max=1, max_open=True)] * 2), "Adam's two moment decay rates, e.g. --betas 0.96 0.999 (Pyro's DMM example)."),
    ("--device", "device", str, "cpu or cuda."),
    ("--devices", "devices", POSITIVE, "Data-parallel processes per node (GPUs with --device cuda; CPU processes otherwise); --batch-size is per process. Needs pyroseq[distributed]."),
    ("--num-nodes", "num_nodes", POSITIVE, "Nodes of a multi-node run (each runs the same command; see docs/scaling.md)."),
    ("--seed", "seed", SEED, "Random seed; a CPU run is reproducible from it."),
    ("--valid-every", "valid_every", NON_NEGATIVE, "Validate every N steps (0: only at the end)."),
    ("--valid-size", "valid_size", POSITIVE, "Sequences in the validation batch."),
    ("--checkpoint-every", "checkpoint_every", NON_NEGATIVE, "Checkpoint every N steps (and always at the end)."),
]  # fmt: skip


def _with_options(fn: Any) -> Any:
    for flag, field, type_, help_ in reversed(_OPTIONS):
        default = getattr(_DEFAULTS, field)
        shown = f" [default: {default}]" if default is not None and flag not in ("--file",) else ""
        fn = click.option(
            flag, f"opt_{flag[2:].replace('-', '_')}", type=type_, default=None, help=help_ + shown
        )(fn)
    return fn


@click.command("train")
@_with_options
@click.option(
    "--jit/--no-jit", default=None, help="JitTrace_ELBO for --objective elbo (about 2x faster per step)."
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    help="Start from a named configuration: dmm, Pyro's Deep Markov Model at its example's sizes "
    "(polyphonic data, gated transition, combiner guide; see pyroseq.runs.config.dmm_config); options "
    "given beside it override it.",
)
@threads_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@json_option
@click.pass_context
@handle_errors
def train_command(
    ctx: click.Context,
    out: str,
    resume: bool,
    progress: bool | None,
    as_json: bool,
    jit: bool | None,
    preset: str | None,
    **opts: Any,
) -> None:
    """Train a model by SVI into the run directory --out (checkpoint.pt, config.json, metrics.jsonl).

    Ctrl-C or SIGTERM stops after writing a checkpoint (exit status 130 or 143); --resume continues
    where it stopped.

    \b
    Schedules on --resume: the learning rate falls by the factor lr_decay^(1/steps) per
    step, and scheduled sampling's teacher probability follows its schedule, both set from
    the run's first --steps. Extending a run (--resume --steps N) never makes either jump:
    they go on from where they stopped at the same rate, so past the first --steps the
    learning rate falls below lr * lr_decay. A new --lr on resume scales the rate reached;
    a new --lr-decay sets the factor to lr_decay^(1/N) from there on.
    """
    given: dict[str, Any] = {}
    for flag, field, _, _ in _OPTIONS:
        key = f"opt_{flag[2:].replace('-', '_')}"
        if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE:
            given[field] = opts[key]
    if ctx.get_parameter_source("opt_file") == ParameterSource.COMMANDLINE:  # --file PATH is --source PATH
        given["source"] = corpus_source(opts["opt_source"], opts["opt_file"], source_flag="opt_source")
    if jit is not None:
        given["jit"] = jit
    if resume and preset is not None:
        raise ConfigError("--preset names a new run's configuration; a resumed run keeps its own: drop it")
    config = None if resume else PRESETS[preset]() if preset else dataclasses.replace(_DEFAULTS)
    result = train_run(config, out, resume=resume, overrides=given, progress=progress)
    rate_key = next(k for k in result if k.endswith("_per_second"))
    first = "n/a" if result["initial_loss"] is None else f"{result['initial_loss']:.3f}"
    last = "n/a" if result["final_loss"] is None else f"{result['final_loss']:.3f}"
    valid = "n/a" if result["valid_loss"] is None else f"{result['valid_loss']:.3f}"
    at = "" if result["init_from_step"] is None else f" at its step {result['init_from_step']}"  # none: older
    lines = [
        f"{'stopped' if result['interrupted'] else 'trained'} {result['model']} on {result['data']}: "
        f"step {result['steps']} ({result['steps_this_run']} this run, {result['seconds']:.1f} s)",
        f"  loss ({result['loss_unit']}): {first} -> {last}   valid {valid}",
        f"  {rate_key.replace('_', ' ')}: {result[rate_key] or 0:.0f}",
        f"  checkpoint: {result['checkpoint']}",
        *([f"  started from the weights of {result['init_from']}{at}"] if result["init_from"] else []),
        *(f"  note: {n}" for n in result["notes"]),
    ]
    emit(result, as_json, lines)
    if result["stopped_by"] is not None:
        # Stopped by a signal, checkpoint written: exit 128 + signal number, as a shell reports a process
        # the signal killed, so that `train && evaluate` chains and schedulers see the stop.
        ctx.exit(128 + signal.Signals[result["stopped_by"]].value)
