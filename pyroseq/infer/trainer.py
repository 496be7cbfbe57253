"""The training loop: SVI steps over any pyroseq model and guide, with checkpoints and resume.

The trainer knows nothing of the model: it asks the objective for a differentiable loss
(``ELBO.differentiable_loss``, whose gradient is the one ``SVI.step`` takes), calls ``backward`` on it,
then updates the parameters with a torch optimiser, which keeps the optimiser's state in one
``state_dict`` a checkpoint can hold. With a Lightning ``Fabric`` (see :mod:`pyroseq.runs.distributed`)
the same loop runs on every rank: the loss is a module that ``DistributedDataParallel`` wraps, so the
backward pass averages the gradients over the ranks.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from pyro import poutine
from tqdm.auto import tqdm

from pyroseq.checks import check_clip_norm, check_optimiser
from pyroseq.data.batch import SequenceBatch
from pyroseq.errors import ConfigError, NonFiniteError, PyroseqError, first_line
from pyroseq.infer.annealing import ScaleLatents, check_warmup_start, default_kl_warmup, warmup_factor
from pyroseq.infer.averaging import ParameterEMA, check_ema_decay
from pyroseq.infer.diagnostics import COLLAPSE_THRESHOLD, check_collapse, nonfinite_site
from pyroseq.infer.objectives import UNANNEALED, check_objective_applies, make_objective, resolve_recipe
from pyroseq.models.base import SequenceModel, StateSpaceModel
from pyroseq.module import load_modules

__all__ = ["Trainer", "DivergenceError", "NonFiniteLossError"]

SUMMARY_STEPS = 20  # the initial and final losses average this many steps of the whole run
# Ctrl-C, and what schedulers, `timeout` and container stops send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DivergenceError(PyroseqError, RuntimeError):
    """Training diverged: a parameter became non-finite or exploded (``|x| > max_param``)."""


class NonFiniteLossError(DivergenceError):
    """Training produced non-finite losses for too many steps in a row."""


class ObjectiveModule(torch.nn.Module):
    """The objective's loss on a batch as a module holding the model and guide (what DDP wraps).

    ``forward(ids, mask)`` is ``objective.differentiable_loss(model, guide, ids, mask)``. A batch on
    which the distributions meet invalid (NaN) values gives a NaN loss that reaches every parameter,
    rather than an exception: every rank then gets NaN gradients from the averaging, and all skip the
    step together instead of one rank leaving the others waiting. A module's own report of where
    (:class:`~pyroseq.errors.NonFiniteError`) is kept in :attr:`nonfinite`.
    """

    def __init__(self, model: SequenceModel, guide: Callable[..., Any], objective: Any) -> None:
        super().__init__()
        self.model = model
        self.guide = guide  # a submodule when it is a module; a plain function otherwise
        self.objective = objective
        self.nonfinite: str | None = None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.nonfinite = None
        try:
            return self.objective.differentiable_loss(self.model, self.guide, ids, mask)
        except NonFiniteError as e:
            self.nonfinite = first_line(e)
        except ValueError as e:
            # Distribution argument validation meets NaN states before any loss exists.
            if "invalid values" not in str(e):
                raise
        return math.nan * sum(p.sum() for p in self.parameters() if p.requires_grad)


class Trainer:
    """Fits a model and its guide by stochastic variational inference.

    Each step: ``model.train_hook(step, batch)`` (scheduled sampling, a discriminator update, ...), the
    objective's differentiable loss for the batch divided by the batch size (the loss is summed over
    sequences), its gradients (averaged over the ranks with ``fabric``) clipped to the norm ``clip_norm``
    (0: not clipped; the norm is logged as ``grad_norm`` either way), then
    Adam (torch's, with ``betas`` and ``weight_decay``) with a learning rate that decays geometrically from
    ``lr`` to ``lr * lr_decay`` over
    ``total_steps`` (a torch ``ExponentialLR`` with the per-step factor ``lr_decay ** (1 / total_steps)``).
    A step whose loss or gradients are not finite is skipped (the parameters stay as they were) with a
    one-line warning naming the step and the site where the loss stopped being finite;
    ``max_bad_steps`` such steps in a row stop training with :class:`NonFiniteLossError`. After each
    update the parameters are checked: one that is not finite or exceeds ``max_param`` in absolute value
    stops training at once with :class:`DivergenceError`, before anything can checkpoint it (the model
    then holds the diverged values; the last checkpoint does not).

    Args:
        model: a :class:`~pyroseq.models.base.SequenceModel`.
        guide: a callable with the model's signature: a ``PyroModule``, a function whose parameters are
            ``pyro.param`` statements, or an autoguide. Parameters are collected from each step's param
            sites, as ``pyro.infer.SVI`` does; a guide with latent sites but no parameter the trainer can
            see is a :class:`ConfigError` at the first step.
        objective: ``"elbo"``, ``"iwae"``, ``"dreg"`` or ``"fivo"`` (a state-space model only, without a
            warm-up: it scores the state laws itself); ``particles`` K >= 1. ``None`` (each): pyroseq's
            recipe, :func:`~pyroseq.infer.objectives.default_objective` (DReG with K = 8 for a model with
            latent states, the ELBO with K = 1 for one without); an importance-weighted objective named
            without ``particles`` takes K = 8 (:func:`~pyroseq.infer.objectives.resolve_recipe`).
        weight_decay: an L2 penalty ``weight_decay * p`` added to each parameter's gradient before Adam's
            update (torch's ``Adam(weight_decay=...)``, and what Pyro's ``ClippedAdam`` does). The loss is
            per sequence, so a rate set on a loss summed over batches of B sequences (Pyro's Deep Markov
            Model example: 2.0 with B = 20) is that rate divided by B here (0.1): exactly so on full batches
            and where the clip does not act (``clip_norm=0``, as in the DMM preset), since the penalty is
            added after the gradient is clipped.
        betas: Adam's decay rates of its first and second moment estimates (Pyro's DMM example: 0.96,
            0.999). Both options are the trainer's own on resume, not the checkpoint's.
        jit: use ``JitTrace_ELBO`` (ELBO only).
        kl_warmup: KL annealing over this many steps (0: none; ``None``: for a model with latent states
            :func:`~pyroseq.infer.annealing.default_kl_warmup` of ``total_steps``, i.e. 500 steps or half
            of them if fewer, and none without latent states, under ``jit`` or for ``"fivo"``): step ``i``
            scales every latent site of the model and guide by ``beta_i = min(1, (i + 1) / kl_warmup)``
            (:class:`~pyroseq.infer.annealing.ScaleLatents`), so the objective's KL term is down-weighted
            until it reaches the ordinary bound; the step's figures include ``kl_scale``. Validation
            (:meth:`evaluate_loss`) always computes the unscaled bound.
        kl_warmup_start: the factor the warm-up starts from, ``beta_i = s + (1 - s) min(1, (i + 1) /
            kl_warmup)`` (:func:`~pyroseq.infer.annealing.warmup_factor`); 0 by default, 0.2 in Pyro's Deep
            Markov Model example.
        max_param: the largest absolute parameter value taken as sane (Adam moves a parameter by at
            most about ``lr`` per step, so a trained model's stay far below the default).
        collapse_every: once the warm-up is over, every this many steps (0: never) the step's batch
            measures what the states carry (:func:`~pyroseq.infer.diagnostics.check_collapse`): under
            :data:`~pyroseq.infer.diagnostics.COLLAPSE_THRESHOLD` nats per word, a
            :class:`~pyroseq.infer.diagnostics.PosteriorCollapseWarning` (once) names the remedy. Models
            without latent sites are not checked.
        ema: keep an exponential moving average of the parameters with this decay
            (:class:`~pyroseq.infer.averaging.ParameterEMA`, updated after every step that updates the
            parameters; 0: none). Validation (:meth:`evaluate_loss`) and :meth:`state_dict`'s ``"model"`` and
            ``"guide"`` (what a run directory's users load) are then the averaged weights; training goes on
            from the raw ones (``"raw"``), and :meth:`averaged` swaps the averages in for any other use.
        fabric: a Lightning ``Fabric`` of several processes (:func:`pyroseq.runs.distributed.launch`):
            each step's gradients and loss are averaged over its ranks, and a stop (Ctrl-C) on any rank
            stops all of them at the same step. ``None``: one process.

    The schedule's state is in :meth:`state_dict`. A trainer that loads it continues the decay where it
    stopped, whatever its own ``total_steps``: a run extended past its first ``total_steps`` goes on at the
    same per-step factor, so the rate never jumps. A different ``lr`` scales the rate reached; a
    different ``lr_decay`` sets the factor to ``lr_decay ** (1 / total_steps)`` from there on.
    """

    def __init__(
        self,
        model: SequenceModel,
        guide: Callable[..., Any],
        *,
        objective: str | None = None,
        particles: int | None = None,
        lr: float = 6e-3,
        lr_decay: float = 0.1,
        total_steps: int = 1000,
        clip_norm: float = 10.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        jit: bool = False,
        kl_warmup: int | None = None,
        kl_warmup_start: float = 0.0,
        max_bad_steps: int = 20,
        max_param: float = 1e4,
        collapse_every: int = 250,
        ema: float = 0.0,
        fabric: Any = None,
    ) -> None:
        sizes = (("lr", lr), ("total_steps", total_steps), ("max_param", max_param))
        for name, value in sizes:
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive finite number, got {value}")
        check_clip_norm(clip_norm)
        check_ema_decay(ema, name="ema", allow_off=True)
        check_optimiser(weight_decay=weight_decay, betas=betas)
        if not 0 < lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}")
        latent = not model.autoregressive
        objective, particles = resolve_recipe(objective, particles, latent=latent, jit=jit)
        annealable = latent and not jit and objective not in UNANNEALED
        if kl_warmup is None:
            kl_warmup = default_kl_warmup(total_steps) if annealable else 0
        if kl_warmup < 0:
            raise ConfigError(f"kl_warmup must be >= 0 steps, got {kl_warmup}")
        states = isinstance(model, StateSpaceModel)
        check_objective_applies(objective, states=states, kl_warmup=kl_warmup, who=type(model).__name__)
        check_warmup_start(kl_warmup_start)
        if kl_warmup_start and not kl_warmup:
            raise ConfigError(
                f"kl_warmup_start={kl_warmup_start:g} has no effect without a warm-up (kl_warmup=0"
                + (f", which objective {objective!r} needs)" if objective in UNANNEALED else ")"),
                params=("kl_warmup_start", "kl_warmup"),
            )
        if collapse_every < 0:
            raise ConfigError(f"collapse_every must be >= 0 steps, got {collapse_every}")
        if jit and kl_warmup:
            raise ConfigError(
                "jit=True cannot be combined with kl_warmup: the trace would freeze the annealing factor "
                "of its first step; drop one",
                params=("jit", "kl_warmup"),
            )
        if jit:
            model.require_traceable()
        self.model = model
        self.guide = guide
        self.loss = make_objective(objective, particles=particles, jit=jit)
        self.lr, self.lr_decay = lr, lr_decay
        self.kl_warmup, self.kl_warmup_start = kl_warmup, kl_warmup_start
        self.collapse_every = collapse_every
        self.clip_norm = clip_norm
        self.weight_decay, self.betas = weight_decay, tuple(betas)
        self.max_bad_steps = max_bad_steps
        self.max_param = max_param
        params = list(model.optimised_parameters())
        if isinstance(guide, torch.nn.Module):
            params += list(guide.parameters())
        self.params = params
        # The model's parameters it does not hand to SVI (an adversary's) stay out, wherever they appear.
        self._model_ids = {id(p) for p in model.parameters()}
        self._known = self._model_ids | {id(p) for p in params}
        self._checked_guide = False
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=self.betas, weight_decay=weight_decay)
        self._gamma = lr_decay ** (1 / total_steps)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=self._gamma)
        # positions in self.params, which only ever grows at its end: stable names for the checkpoint
        self.ema = ParameterEMA(self._named_params, decay=ema) if ema else None
        self.fabric = fabric
        objective_module = ObjectiveModule(model, guide, self.loss)
        self._objective_module = objective_module
        self.objective = objective_module if fabric is None else fabric.setup_module(objective_module)
        self.step_count = 0
        self.bad_steps = 0
        # The first and the latest losses of the whole run, kept in checkpoints so that a resumed run
        # reports the same initial and final loss as an uninterrupted one.
        self.head_losses: list[float] = []
        self.tail_losses: deque[float] = deque(maxlen=SUMMARY_STEPS)

    def _named_params(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        return ((str(i), p) for i, p in enumerate(self.params))

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.model, self.guide) if isinstance(m, torch.nn.Module)]

    def step(self, batch: SequenceBatch) -> dict[str, float]:
        """One SVI step on ``batch``, any :class:`~pyroseq.data.batch.SequenceBatch` (symbols or frames: the
        model and guide are called with its ``observations`` and ``mask``); returns ``{"loss": loss per
        sequence, ...hook figures}``."""
        for m in self._modules():
            m.train()
        figures = dict(self.model.train_hook(self.step_count, batch))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        if not self._checked_guide:
            self._check_guide(batch)
        # Parameters are collected as pyro.infer.SVI does: from the param sites of each step, which finds
        # a function guide's pyro.param sites and those an autoguide creates on its first call.
        annealing = contextlib.nullcontext()
        if self.kl_warmup:
            figures["kl_scale"] = beta = warmup_factor(self.step_count, self.kl_warmup, self.kl_warmup_start)
            annealing = ScaleLatents(beta)
        with poutine.trace(param_only=True) as params, annealing:
            loss_tensor = self.objective(batch.observations, batch.mask) / len(batch)
        self._add_params(site["value"] for site in params.trace.nodes.values())
        if self.fabric is None:
            loss_tensor.backward()
        else:
            self.fabric.backward(loss_tensor)  # gradients averaged over the ranks
            loss_tensor = self.fabric.all_reduce(loss_tensor.detach(), reduce_op="mean")
        loss = float(loss_tensor.detach())
        grads = [p.grad for p in self.params if p.grad is not None]
        # clip_grad_norm_ leaves the gradients as they are at an infinite norm, and still returns theirs
        max_norm = self.clip_norm or math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm)) if grads else 0.0
        if math.isfinite(loss) and math.isfinite(norm):
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            self.scheduler.step()  # a skipped step leaves the schedule too, as it leaves the parameters
            self.bad_steps = 0
            self._check_parameters()
        else:
            self.bad_steps += 1
            where = self._nonfinite_where(batch, loss)
            if self.bad_steps >= self.max_bad_steps:
                raise NonFiniteLossError(
                    f"{self.bad_steps} steps in a row gave a non-finite loss or gradient, the latest at step "
                    f"{self.step_count + 1} {where} (skipped: the parameters are those from before them); "
                    f"lower the learning rate (lr={lr:g})"
                )
            warnings.warn(
                f"step {self.step_count + 1}: non-finite loss or gradient {where}; the step was skipped: if "
                f"it recurs, lower the learning rate (lr={lr:g})",
                stacklevel=2,
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        if (
            self.collapse_every
            and self.step_count > self.kl_warmup
            and (self.step_count - self.kl_warmup) % self.collapse_every == 0
        ):
            self._check_collapse(batch)
        return {"loss": loss, "grad_norm": norm, "lr": lr, **figures}

    def _nonfinite_where(self, batch: SequenceBatch, loss: float) -> str:
        """Where the step's loss stopped being finite, as ``"at the guide's site 'h' (...)"``."""
        if self._objective_module.nonfinite is not None:
            return f"({self._objective_module.nonfinite})"
        if math.isfinite(loss):
            return "(the loss is finite: its gradient is not)"
        with torch.random.fork_rng():  # the diagnosis must not move the training's random stream
            site = nonfinite_site(self.model, self.guide, batch.observations, batch.mask)
        return f"at {site}" if site is not None else "(every site is finite on a second draw)"

    def _check_collapse(self, batch: SequenceBatch) -> None:
        """Warn once if the states carry less than the collapse threshold on ``batch``."""
        with torch.random.fork_rng(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_collapse(
                self.model, self.guide, batch.observations, batch.mask, threshold=COLLAPSE_THRESHOLD
            )
        if caught:
            self.collapse_every = 0  # said once
            warnings.warn(f"step {self.step_count}: {caught[0].message}", caught[0].category, stacklevel=3)

    def _add_params(self, values: Iterable[torch.Tensor]) -> None:
        """Hand the optimiser the unconstrained leaves of param-site values it does not know yet."""
        new = []
        for value in values:
            unconstrained = getattr(value, "unconstrained", None)
            leaf = unconstrained() if callable(unconstrained) else value
            if leaf is not None and leaf.requires_grad and id(leaf) not in self._known:
                self._known.add(id(leaf))
                new.append(leaf)
        if new and self.fabric is not None:
            raise ConfigError(
                "data-parallel training averages the gradients of the parameters the model and guide hold "
                "when the Trainer is built; this guide creates parameters as it runs (pyro.param, an "
                "autoguide): make it an nn.Module whose parameters exist beforehand, or train on one process"
            )
        if new:
            self.params += new
            self.optimizer.add_param_group({"params": new})

    def _check_guide(self, batch: SequenceBatch) -> None:
        """Refuse a guide with latent sites but no parameter the trainer can see (it would stay frozen)."""
        self._checked_guide = True
        with torch.random.fork_rng(), poutine.trace(param_only=True) as params:
            trace = poutine.trace(self.guide).get_trace(batch.observations, batch.mask)
        latent = [
            name for name, site in trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]
        ]
        seen = [
            getattr(site["value"], "unconstrained", lambda: None)() for site in params.trace.nodes.values()
        ]
        if isinstance(self.guide, torch.nn.Module):
            seen += list(self.guide.parameters())
        guide_params = [p for p in seen if p is not None and p.requires_grad and id(p) not in self._model_ids]
        if latent and not guide_params:
            raise ConfigError(
                f"the guide {getattr(self.guide, '__name__', type(self.guide).__name__)} draws latent sites "
                f"({', '.join(latent[:3])}, ...) but has no parameter the trainer can see, so it would never "
                "train: declare its parameters with pyro.param or pyro.module, or make it an nn.Module"
            )

    @torch.no_grad()
    def _check_parameters(self) -> None:
        """Raise :class:`DivergenceError` if the update made a parameter non-finite or larger than
        ``max_param`` (one fused max over all parameters)."""
        if not self.params:
            return
        largest = float(torch.nn.utils.get_total_norm(self.params, norm_type=math.inf))
        if not largest <= self.max_param:  # also catches NaN
            what = (
                f"a parameter reached |x| = {largest:.3g} (max_param {self.max_param:g})"
                if math.isfinite(largest)
                else "a parameter is not finite"
            )
            raise DivergenceError(
                f"training diverged at step {self.step_count + 1}: {what}; the learning rate is too high"
            )

    def averaged(self) -> contextlib.AbstractContextManager[None]:
        """The averaged parameters in place inside the block (with ``ema``; without it, the parameters as
        they are): ``with trainer.averaged(): save_run(...)`` saves the averaged weights, as a run directory
        of ``train_run`` holds them."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    @torch.no_grad()
    def evaluate_loss(self, batch: SequenceBatch) -> float:
        """The objective's loss per sequence on ``batch`` (no update) with the averaged parameters (with
        ``ema``); models in eval mode."""
        for m in self._modules():
            m.eval()
        with self.averaged():
            loss = self.loss.loss(self.model, self.guide, batch.observations, batch.mask)
        return float(loss) / len(batch)

    def fit(
        self,
        batches: Iterator[SequenceBatch],
        *,
        steps: int,
        validate: Callable[[], dict[str, float]] | None = None,
        valid_every: int = 0,
        checkpoint: Callable[[], None] | None = None,
        checkpoint_every: int = 0,
        log: Callable[[dict[str, Any]], None] | None = None,
        progress: bool | None = None,
        unit: str = "seq",
    ) -> dict[str, Any]:
        """Train until ``step_count == steps``; Ctrl-C or SIGTERM stops cleanly between steps, after a
        checkpoint.

        Ctrl-C (SIGINT) and SIGTERM (sent by schedulers, ``timeout`` and container stops), caught in the
        main thread, only ask the loop to stop after the step under way, so a step is never cut in half:
        the checkpoint then matches the sampler and random states, and a resumed run equals an
        uninterrupted one. A second signal, or a KeyboardInterrupt raised inside a step, propagates as
        KeyboardInterrupt without a closing checkpoint (the last one is intact); a KeyboardInterrupt from
        ``batches`` (between steps) stops cleanly. A :class:`DivergenceError` propagates with a note on
        which checkpoint holds the parameters from before it.

        Returns ``{"steps", "initial_loss", "final_loss", "seconds", "sequences_per_second",
        "interrupted", "stopped_by"}``, where the losses average the first and last (up to) 20 steps of
        the whole run (counting steps before a resume) and ``stopped_by`` names the signal that stopped
        training (``"SIGINT"``, ``"SIGTERM"``) or is None.
        """
        start = self.step_count
        sequences = 0
        stopped_by: int | None = None  # a plain variable: a signal handler must not take locks
        began = time.perf_counter()
        previous_handlers = {}
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: Any) -> None:
                nonlocal stopped_by
                if stopped_by is not None:  # asked twice: the user wants out now
                    raise KeyboardInterrupt
                stopped_by = signum

            previous_handlers = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
        bar = tqdm(
            total=steps,
            initial=start,
            desc="train",
            unit="step",
            disable=None if progress is None else not progress,  # None: only on a terminal
            dynamic_ncols=True,
        )
        saved_at = None  # the step of the last checkpoint written here
        agreed = None  # the stop all ranks agreed on
        try:
            # The agreement goes into its own variable: a signal handled while the ranks agree (where they
            # wait for each other, so where a signal usually lands) sets stopped_by after the agreement was
            # computed, and assigning the agreement to stopped_by would lose it; the next step agrees on it.
            while self.step_count < steps and (agreed := self._agreed_stop(stopped_by)) is None:
                try:
                    batch = next(batches)
                except KeyboardInterrupt:  # between steps: nothing is half done
                    if self.fabric is not None:
                        raise  # the other ranks may be inside this step already: no clean stop
                    stopped_by = signal.SIGINT
                    continue
                figures = self.step(batch)
                sequences += len(batch)
                self._record_loss(figures["loss"])
                rate = sequences / max(time.perf_counter() - began, 1e-9)
                record = {"step": self.step_count, **figures, f"{unit}_per_s": rate}
                if validate is not None and valid_every and self.step_count % valid_every == 0:
                    record.update(validate())
                if log is not None:
                    log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{figures['loss']:.3f}", **{f"{unit}/s": f"{rate:.0f}"})
                if checkpoint is not None and checkpoint_every and self.step_count % checkpoint_every == 0:
                    checkpoint()
                    saved_at = self.step_count
        except DivergenceError as e:
            if checkpoint is None:
                raise
            last = saved_at if saved_at is not None else (start or None)  # a resumed run began at one
            advice = (
                "no checkpoint was written: start the run again with a lower lr"
                if last is None
                else f"the checkpoint of step {last} is from before it: resume with a lower lr (or clip_norm)"
            )
            raise type(e)(f"{e}; {advice}", params=("lr", "clip_norm")) from None
        finally:
            bar.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        if agreed is not None:
            stopped_by = agreed  # every rank reports the signal they stopped on together
        if checkpoint is not None and saved_at != self.step_count:
            checkpoint()
        seconds = time.perf_counter() - began
        head, tail = self.head_losses, list(self.tail_losses)
        return {
            "steps": self.step_count,
            "steps_this_run": self.step_count - start,
            "initial_loss": sum(head) / len(head) if head else None,
            "final_loss": sum(tail) / len(tail) if tail else None,
            "seconds": seconds,
            "sequences_per_second": sequences / seconds if seconds > 0 else None,
            "interrupted": stopped_by is not None,
            "stopped_by": None if stopped_by is None else signal.Signals(stopped_by).name,
        }

    def _agreed_stop(self, stopped_by: int | None) -> int | None:
        """The signal that stops training on any rank (the same on all, so that they stop together)."""
        if self.fabric is None:
            return stopped_by
        signum = torch.tensor(stopped_by or 0, device=self.fabric.device)
        agreed = int(self.fabric.all_reduce(signum, reduce_op="max"))
        return agreed or None

    def _record_loss(self, loss: float) -> None:
        if len(self.head_losses) < SUMMARY_STEPS:
            self.head_losses.append(loss)
        self.tail_losses.append(loss)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "lr_decay": self.lr_decay,
            "step": self.step_count,
        }
        pairs = (("model", self.model), ("guide", self.guide))
        modules = [(name, m) for name, m in pairs if isinstance(m, torch.nn.Module)]
        for name, m in modules:
            state[name] = m.state_dict()
        if self.ema is not None:  # users load "model" and "guide": the averages; training resumes from "raw"
            with self.ema.raw():  # (inside trainer.averaged() the live values are the averages)
                state["raw"] = {name: _copied(m) for name, m in modules}
            with self.ema.applied():
                for name, m in modules:
                    state[name] = _copied(m)
            state["ema"] = self.ema.state_dict()
        state["model_extra"] = self.model.extra_state_dict()
        state["losses"] = {"head": list(self.head_losses), "tail": list(self.tail_losses)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_modules(self.model, self.guide, {**state, **state.get("raw", {})})
        if self.ema is not None and "ema" in state:  # else the average starts from the loaded weights
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])  # with the rate the next step takes
        if "scheduler" in state:  # absent from checkpoints of earlier versions: go on from their rate
            self.scheduler.load_state_dict(state["scheduler"])
        saved_lr = self.scheduler.base_lrs[0]
        if self.lr != saved_lr:  # a new --lr on resume: the same decay, scaled
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr / saved_lr
            self.scheduler.base_lrs = [self.lr] * len(self.optimizer.param_groups)
        if self.lr_decay != state.get("lr_decay", self.lr_decay):  # a new --lr-decay: a new factor
            self.scheduler.gamma = self._gamma
        for group in self.optimizer.param_groups:  # the trainer's own, not the checkpoint's
            group["weight_decay"], group["betas"] = self.weight_decay, self.betas
        self.step_count = int(state["step"])
        losses = state.get("losses", {})  # absent from checkpoints of earlier versions
        self.head_losses = [float(x) for x in losses.get("head", [])]
        self.tail_losses = deque((float(x) for x in losses.get("tail", [])), maxlen=SUMMARY_STEPS)


def _copied(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with its own tensors (a state dict's share the parameters' storage)."""
    return {k: v.clone() for k, v in module.state_dict().items()}
