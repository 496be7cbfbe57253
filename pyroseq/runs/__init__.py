"""Training runs: a run's configuration, its model and guide specs, checkpoints and run directory, and
:func:`train_run`, which trains one for ``pyroseq train``.

* :mod:`~pyroseq.runs.config`: :class:`RunConfig`, a run's options and the rules between them, the corpus
  and device it names;
* :mod:`~pyroseq.runs.specs`: model and guide specs and :func:`build_from_specs`;
* :mod:`~pyroseq.runs.checkpoint`: atomic writes, :func:`save_checkpoint` / :func:`load_checkpoint`;
* :mod:`~pyroseq.runs.rundir`: the files of a run directory, :func:`load_run` (which needs nothing of the
  training loop) and :func:`save_run` for a model trained in a script;
* :mod:`~pyroseq.runs.guard`, :mod:`~pyroseq.runs.memory`, :mod:`~pyroseq.runs.distributed`: the lock
  that lets one process train a run, whether a step fits in memory, data-parallel launch;
* :mod:`~pyroseq.runs.train`: :func:`train_run`.

Inference itself (objectives, the :class:`~pyroseq.infer.Trainer`) is :mod:`pyroseq.infer`.
"""

from pyroseq.runs.checkpoint import load_checkpoint, save_checkpoint
from pyroseq.runs.config import RunConfig, load_corpus, resolve_device
from pyroseq.runs.rundir import LoadedRun, load_run, save_run
from pyroseq.runs.specs import build_from_specs, guide_spec, model_spec
from pyroseq.runs.train import train_run

__all__ = [
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
