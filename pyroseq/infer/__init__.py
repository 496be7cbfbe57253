"""Inference: SVI objectives, KL annealing, the training loop and the particle filter.

* :mod:`~pyroseq.infer.objectives`: ELBO, IWAE, DReG and FIVO by name; :class:`IWAE`, a differentiable
  IWAE loss, and :func:`~pyroseq.infer.objectives.importance_log_weights`, the one computation of
  importance log-weights;
* :mod:`~pyroseq.infer.dreg`: :class:`DReG`, IWAE with doubly reparameterised guide gradients;
* :mod:`~pyroseq.infer.freebits`: :class:`FreeBitsELBO`, the ELBO with a floor under each KL term;
* :mod:`~pyroseq.infer.fivo`: :class:`FIVO`, a particle filter's bound with the guide proposing;
* :mod:`~pyroseq.infer.annealing`: :class:`ScaleLatents`, KL annealing as a Pyro effect handler;
* :mod:`~pyroseq.infer.averaging`: :class:`ParameterEMA`, a moving average of the parameters to evaluate;
* :mod:`~pyroseq.infer.trainer`: the :class:`Trainer` (SVI steps, gradient clipping, learning-rate decay);
* :mod:`~pyroseq.infer.diagnostics`: :func:`check_collapse` (do the states carry anything?) for any loop;
* :mod:`~pyroseq.infer.smc`: the particle filter of a state-space model, along sequences
  (:func:`~pyroseq.infer.smc.filter_prefixes`) and down a prefix tree
  (:func:`~pyroseq.infer.smc.prefix_tree_log_evidence`).

A training run's configuration, checkpoints and directory live in :mod:`pyroseq.runs` (they were here
before; the old paths still import, with a ``DeprecationWarning``, for one release).
"""

from pyroseq.infer.annealing import ScaleLatents, warmup_factor
from pyroseq.infer.averaging import ParameterEMA
from pyroseq.infer.diagnostics import PosteriorCollapseWarning, check_collapse, latent_kl
from pyroseq.infer.dreg import DReG
from pyroseq.infer.fivo import FIVO
from pyroseq.infer.freebits import FreeBitsELBO
from pyroseq.infer.objectives import IWAE, OBJECTIVES, make_objective
from pyroseq.infer.trainer import NonFiniteLossError, Trainer
from pyroseq.moved import alias_modules, moved_names

__all__ = [
    "OBJECTIVES",
    "IWAE",
    "DReG",
    "FreeBitsELBO",
    "FIVO",
    "make_objective",
    "ScaleLatents",
    "warmup_factor",
    "ParameterEMA",
    "Trainer",
    "NonFiniteLossError",
    "check_collapse",
    "latent_kl",
    "PosteriorCollapseWarning",
]

_RUNS = {m: m for m in ("config", "specs", "checkpoint", "rundir", "guard", "memory", "distributed")}
alias_modules(
    {f"pyroseq.infer.{old}": f"pyroseq.runs.{new}" for old, new in (_RUNS | {"run": "train"}).items()}
)
__getattr__ = moved_names(
    "pyroseq.infer",
    {
        **dict.fromkeys(("RunConfig", "load_corpus", "resolve_device"), "pyroseq.runs.config"),
        **dict.fromkeys(("model_spec", "guide_spec", "build_from_specs"), "pyroseq.runs.specs"),
        **dict.fromkeys(("save_checkpoint", "load_checkpoint"), "pyroseq.runs.checkpoint"),
        **dict.fromkeys(("LoadedRun", "load_run", "save_run"), "pyroseq.runs.rundir"),
        "train_run": "pyroseq.runs.train",
    },
)
