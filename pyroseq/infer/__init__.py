"""Inference: SVI objectives, the training loop, checkpoints and training runs."""

from pyroseq.infer.checkpoint import load_checkpoint, save_checkpoint
from pyroseq.infer.objectives import OBJECTIVES, make_objective
from pyroseq.infer.run import LoadedRun, RunConfig, load_run, train_run
from pyroseq.infer.trainer import NonFiniteLossError, Trainer

__all__ = [
    "OBJECTIVES",
    "make_objective",
    "Trainer",
    "NonFiniteLossError",
    "RunConfig",
    "LoadedRun",
    "train_run",
    "load_run",
    "save_checkpoint",
    "load_checkpoint",
]
