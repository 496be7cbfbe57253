"""Data-parallel training: one process per device, DistributedDataParallel through Lightning Fabric.

:func:`launch` starts ``devices`` processes on this node (or joins the ones that ``torchrun`` or SLURM
started) and runs a function in each with a ``Fabric`` whose ``setup_module`` wraps a module in
``DistributedDataParallel``: every rank computes the loss on its own batch, and the backward pass
averages the gradients over the ranks, so ``N`` ranks with batches of ``B`` take the step that one
process takes with the ``N * B`` sequences together. The training loop stays pyroseq's own
(:class:`~pyroseq.infer.trainer.Trainer`); Fabric only launches, connects and wraps.

Lightning Fabric is an optional dependency: ``pip install "pyroseq[distributed]"``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

import torch

from pyroseq.errors import ConfigError, DeviceError, PyroseqError

__all__ = ["launch", "launched_externally", "leads_run", "rank_seed", "gather_objects"]

# Launchers that start the processes themselves set these; Fabric then joins them instead of forking.
_EXTERNAL_LAUNCH = ("LOCAL_RANK", "SLURM_PROCID")
# The rank of this process (torchrun, SLURM) or of this node (pyroseq's own launcher on several nodes).
_RANKS = ("RANK", "SLURM_PROCID", "NODE_RANK")


def launched_externally() -> bool:
    """Whether this process is one of several started by ``torchrun``, SLURM or ``fabric run``."""
    return any(name in os.environ for name in _EXTERNAL_LAUNCH)


def leads_run() -> bool:
    """Whether this process leads its run: it is global rank 0, or launches the ranks of node 0. Only the
    leader claims and locks the run directory, which the other processes of the run share."""
    return all(os.environ.get(name, "0") == "0" for name in _RANKS)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s word draws and noise: ``seed`` on rank 0, so that a one-device run
    is rank 0 of a many-device one, and far from the ``seed + 1``, ``seed + 2`` that validation uses."""
    return seed + 1000 * rank


def gather_objects(fabric: Any, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without ``fabric``."""
    if fabric is None or fabric.world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def launch(
    function: Callable[..., Any], *args: Any, devices: int, num_nodes: int, device: torch.device
) -> Any:
    """Run ``function(fabric, *args)`` on ``devices`` processes per node; return rank 0's result.

    On CPU the processes are forked (quick to start, gloo backend); on CUDA they are spawned, one per GPU
    (NCCL). Under ``torchrun`` or SLURM, which start the processes themselves, each process runs
    ``function`` once. Ctrl-C and SIGTERM reach the ranks once, through this process, so they stop
    together after the step under way and rank 0 checkpoints; a second Ctrl-C kills them. A
    :class:`~pyroseq.errors.PyroseqError` raised on rank 0 is raised here, as itself.

    Raises:
        ConfigError: Lightning Fabric is not installed.
        DeviceError: ``devices`` is more than the GPUs this node has.
    """
    try:
        from lightning_fabric import Fabric
        from lightning_fabric.strategies import DDPStrategy
    except ImportError:
        raise ConfigError(
            "devices/num_nodes need Lightning Fabric: pip install 'pyroseq[distributed]' "
            "(or pip install lightning-fabric)",
            params=("devices", "num_nodes"),
        ) from None
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise DeviceError(
            f"devices={devices} asks for {devices} GPUs but this node has {torch.cuda.device_count()}; "
            "lower devices",
            params=("devices",),
        )
    external = launched_externally()
    cuda = device.type == "cuda"
    # Forking is quick but unsafe once CUDA is initialised; spawned processes import everything anew.
    fork = not cuda and "fork" in multiprocessing.get_all_start_methods()
    strategy = DDPStrategy(
        start_method="fork" if fork else "spawn", process_group_backend="nccl" if cuda else "gloo"
    )
    fabric = Fabric(accelerator=device.type, devices=devices, num_nodes=num_nodes, strategy=strategy)
    threads = torch.get_num_threads()
    if external:
        result, error = fabric.launch(_rank_main, function, args, threads, False)
    else:
        with _forward_stop_signals():
            result, error = fabric.launch(_rank_main, function, args, threads, True)
    if error is not None:
        raise error
    return result


def _rank_main(
    fabric: Any, function: Callable[..., Any], args: tuple, threads: int, own_group: bool
) -> tuple[Any, PyroseqError | None]:
    """One rank: ``function(fabric, *args)``, with a user error returned rather than raised, so that the
    launching process can report it as one line (an exception in a rank is a traceback there)."""
    if own_group:
        os.setpgrp()  # the terminal's Ctrl-C reaches the launcher only, which forwards it once
    torch.set_num_threads(threads)  # the user's --threads, which Fabric's launcher overrides
    try:
        return function(fabric, *args), None
    except PyroseqError as e:
        return None, e


class _forward_stop_signals:
    """While the ranks run, the first SIGINT or SIGTERM sent to this process is passed on to them (they
    stop after the step under way); a second kills them, for ranks that hang in a collective."""

    def __enter__(self) -> None:
        received = []

        def forward(signum: int, frame: Any) -> None:
            received.append(signum)
            for child in multiprocessing.active_children():
                os.kill(child.pid, signum if len(received) == 1 else signal.SIGKILL)

        self.previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
