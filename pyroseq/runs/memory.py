"""Will a training step fit? Its memory, estimated from a measured small step before training starts.

A step holds the parameters with their gradients and Adam's two moments (4 copies), what autograd saves
for backward, which grows linearly with the sequences and particles of the batch, and during backward
the gradients of those activations. The estimate measures the saved tensors of one objective evaluation
on a batch of 2 sequences (at most 2 particles), scales it to the requested batch and doubles it: about
what the step needs at its peak, for any model, guide, flow and objective. An allocation can still fail
(other processes take memory too); the command line reports that in one line as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pyroseq.checks import check_memory
from pyroseq.data.batch import SequenceBatch
from pyroseq.infer.objectives import make_objective
from pyroseq.models import SequenceModel

__all__ = ["saved_bytes", "check_training_memory"]


def _modules(model: Any, guide: Any) -> list[torch.nn.Module]:
    return [m for m in (model, guide) if isinstance(m, torch.nn.Module)]


def saved_bytes(model: SequenceModel, guide: Callable[..., Any], objective: Any, batch: SequenceBatch) -> int:
    """Bytes of the tensors (parameters aside) that autograd saves for backward in one
    ``objective.loss_and_grads`` on ``batch``. Random states and gradients are left as they were."""
    modules = _modules(model, guide)
    parameters = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    devices = [batch.mask.device] if batch.mask.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        objective.loss_and_grads(model, guide, batch.observations, batch.mask)
    for m in modules:
        m.zero_grad(set_to_none=True)
    return sum(storages.values())


def check_training_memory(
    model: SequenceModel, guide: Callable[..., Any], probe: SequenceBatch, *, objective: str, batch_size: int,
    particles: int, device: torch.device | str = "cpu",
) -> None:  # fmt: skip
    """Raise :class:`~pyroseq.errors.ResourceError`, with the estimate, when a training step of
    ``batch_size`` sequences x ``particles`` of ``objective`` cannot fit; ``probe`` is a batch of a few
    sequences of the run's length on which the step is measured."""
    k = min(particles, 2)
    measured = saved_bytes(model, guide, make_objective(objective, particles=k), probe)
    per_sequence = measured / (len(probe) * k)
    parameters = sum(p.numel() * p.element_size() for m in _modules(model, guide) for p in m.parameters())
    # Backward holds the gradients of the saved activations beside them: twice the saved bytes at its peak
    # (measured: a DSSM step of 8 x 100,000 particles saved 10 GB and peaked near 18 GB).
    needed = 4 * parameters + 2 * per_sequence * batch_size * particles
    T = probe.mask.shape[1]
    check_memory(
        needed,
        what=f"a training step of {batch_size} sequences x {particles} particles x {T} steps",
        fix="lower --batch-size or --particles (or --state-dim)",
        device=device,
    )
