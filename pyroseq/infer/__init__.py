"""Inference: SVI objectives, the training loop, checkpoints and training runs.

* :mod:`~pyroseq.infer.objectives`: ELBO and IWAE by name; :class:`IWAE`, a differentiable IWAE loss;
* :mod:`~pyroseq.infer.annealing`: :class:`ScaleLatents`, KL annealing as a Pyro effect handler;
* :mod:`~pyroseq.infer.trainer`: the :class:`Trainer` (SVI steps, gradient clipping, learning-rate decay);
* :mod:`~pyroseq.infer.diagnostics`: :func:`check_collapse` (do the states carry anything?) for any loop;
* :mod:`~pyroseq.infer.config`: :class:`RunConfig`, a run's options and the rules between them;
* :mod:`~pyroseq.infer.specs`: model and guide specs and :func:`build_from_specs`;
* :mod:`~pyroseq.infer.checkpoint` and :mod:`~pyroseq.infer.rundir`: atomic checkpoints and the files of
  a run directory (:func:`load_run`, and :func:`save_run` for a model trained in a script);
* :mod:`~pyroseq.infer.run`: :func:`train_run`, which wires them together for ``pyroseq train``.
"""

from pyroseq.infer.annealing import ScaleLatents, warmup_factor
from pyroseq.infer.checkpoint import load_checkpoint, save_checkpoint
from pyroseq.infer.config import RunConfig, load_corpus, resolve_device
from pyroseq.infer.diagnostics import PosteriorCollapseWarning, check_collapse, latent_kl
from pyroseq.infer.objectives import IWAE, OBJECTIVES, make_objective
from pyroseq.infer.run import train_run
from pyroseq.infer.rundir import LoadedRun, load_run, save_run
from pyroseq.infer.specs import build_from_specs, guide_spec, model_spec
from pyroseq.infer.trainer import NonFiniteLossError, Trainer

__all__ = [
    "OBJECTIVES",
    "IWAE",
    "make_objective",
    "ScaleLatents",
    "warmup_factor",
    "Trainer",
    "NonFiniteLossError",
    "check_collapse",
    "latent_kl",
    "PosteriorCollapseWarning",
    "RunConfig",
    "load_corpus",
    "resolve_device",
    "model_spec",
    "guide_spec",
    "build_from_specs",
    "LoadedRun",
    "train_run",
    "load_run",
    "save_run",
    "save_checkpoint",
    "load_checkpoint",
]
