r"""An exponential moving average of the parameters (Polyak averaging), to evaluate and keep.

Stochastic gradients move the parameters around their optimum by an amount that grows with the learning
rate and the gradient's variance. An average of the recent iterates sits nearer the optimum than any one
of them (Polyak & Juditsky 1992); the exponential form (Ruppert's averaging with a forgetting factor)

    avg_n = d_n avg_{n-1} + (1 - d_n) theta_n,      d_n = min(decay, (1 + n) / (10 + n))

follows a model that is still learning, and the ramp ``d_n`` (TensorFlow's ``num_updates`` form) keeps the
early average from remembering the initial parameters: with ``decay = 0.999`` a plain average would still
weigh them by 0.999 ** 3000 = 5% after 3,000 steps. The averages are only read, never trained: the optimiser
keeps stepping the raw parameters, and :meth:`ParameterEMA.applied` swaps the averages in (in place, so every
reference to the parameters, Pyro's param store included, sees them) for evaluation, sampling or saving, and
swaps the raw values back on leaving.

Its use in plain SVI::

    ema = ParameterEMA(decay=0.995)          # Pyro's param store, by name
    for batch in batches:
        svi.step(batch.ids, batch.mask)
        ema.update()
    with ema.applied():
        Predictive(model, guide=guide, num_samples=100)(ids, mask)

A DSSM trained by DReG gains 0.03-0.14 nats/word from it after 3,000 steps while its learning rate is still
high, and nothing where the rate has decayed; at a plateau it steadies the validation curve (docs/results.md,
"Averaged parameters"). The :class:`~pyroseq.infer.trainer.Trainer` keeps one with ``ema=``.

Reference:
    B. T. Polyak, A. B. Juditsky. Acceleration of stochastic approximation by averaging. SIAM J. Control
    Optim. 30(4), 1992.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from pyroseq.errors import CheckpointError, ConfigError

__all__ = ["ParameterEMA", "check_ema_decay"]

Source = torch.nn.Module | Iterable[torch.nn.Module] | Callable[[], Iterable[tuple[str, Tensor]]] | None


def check_ema_decay(decay: Any, *, name: str = "decay", allow_off: bool = False) -> None:
    """A decay is a number in [0, 1) (0: the average is the latest value); ``allow_off``: 0 also means no
    average."""
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not (0 <= decay < 1):
        off = " (0: no average)" if allow_off else ""
        raise ConfigError(f"{name} must be a number in [0, 1){off}, got {decay!r}", params=(name,))


class ParameterEMA:
    """An exponential moving average of parameters, updated after each optimiser step.

    Args:
        source: whose parameters: ``None`` for Pyro's param store (its unconstrained values, by name: every
            ``pyro.param`` and every ``PyroModule`` parameter that SVI has seen; a constrained parameter is
            averaged where the optimiser steps it, unconstrained), a ``torch.nn.Module`` or a sequence of
            them (by ``named_parameters``, prefixed with the module's position), or a callable returning
            ``(name, tensor)`` pairs with unique names. The source is read again at each :meth:`update`, so
            parameters that appear later (an autoguide's, on its first call) join the average then,
            starting from their value. A tensor reached twice (a module shared by two sources) has one
            average, under the first name it was reached by.
        decay: the average's forgetting factor d in [0, 1): about the last ``1 / (1 - d)`` steps count.
        ramp: use ``min(decay, (1 + n) / (10 + n))`` at the n-th update, so that the first steps do not
            keep the initial parameters in the average (``False``: ``decay`` from the first update on).
    """

    def __init__(self, source: Source = None, *, decay: float = 0.995, ramp: bool = True) -> None:
        check_ema_decay(decay)
        if not (source is None or isinstance(source, torch.nn.Module) or callable(source)):
            source = list(source)  # read once: a generator would be empty from the second update on
            strays = [type(m).__name__ for m in source if not isinstance(m, torch.nn.Module)]
            if strays:
                raise ConfigError(
                    "source must be None (Pyro's param store), a module, a sequence of modules or a "
                    "callable returning (name, tensor) pairs; got a sequence holding a "
                    f"{strays[0]}: pass the module itself, not its parameters()",
                    params=("source",),
                )
        self.decay, self.ramp = float(decay), bool(ramp)
        self._source = source
        self.num_updates = 0
        self.averages: dict[str, Tensor] = {}
        self._swapped: list[list[tuple[Tensor, Tensor]]] = []  # (parameter, raw value) of each open applied()

    def _pairs(self) -> Iterator[tuple[str, Tensor]]:
        source = self._source
        if source is None:
            yield from pyro.get_param_store().named_parameters()
        elif isinstance(source, torch.nn.Module):
            yield from source.named_parameters()
        elif callable(source):
            yield from source()
        else:
            for i, module in enumerate(source):
                for name, p in module.named_parameters():
                    yield f"{i}.{name}", p

    def _named(self) -> list[tuple[str, Tensor]]:
        """The source's parameters, each tensor once; two tensors of one name are an error."""
        named, seen, names = [], set(), set()
        for name, p in self._pairs():
            if id(p) in seen:
                continue
            if name in names:
                raise ConfigError(
                    f"two parameters of the source are named {name!r}: give them unique names (a sequence of "
                    "modules prefixes each name with the module's position)",
                    params=("source",),
                )
            seen.add(id(p))
            names.add(name)
            named.append((name, p))
        return named

    def current_decay(self) -> float:
        """The factor the next :meth:`update` uses (the first update only copies the values)."""
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.ramp else self.decay

    @torch.no_grad()
    def update(self) -> None:
        """Move each average towards its parameter's value (call after each optimiser step)."""
        if self._swapped:
            raise RuntimeError("ParameterEMA.update() inside applied(): the parameters are averages there")
        decay = self.current_decay()
        # torch's foreach update takes tensors of one device and dtype
        groups: dict[tuple[Any, Any], tuple[list[Tensor], list[Tensor]]] = {}
        for name, p in self._named():
            avg = self.averages.get(name)
            if avg is None or avg.shape != p.shape:  # new (or rebuilt): it starts at its value
                self.averages[name] = p.detach().clone()
                continue
            if avg.device != p.device or avg.dtype != p.dtype:  # the model moved (.to, .double())
                avg = self.averages[name] = avg.to(device=p.device, dtype=p.dtype)
            averages, values = groups.setdefault((avg.device, avg.dtype), ([], []))
            averages.append(avg)
            values.append(p.detach())
        for averages, values in groups.values():
            get_ema_multi_avg_fn(decay)(averages, values, self.num_updates)
        self.num_updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averages in place of the parameters inside the block; the raw values again after it (also
        after an exception). Parameters that have no average yet keep their value."""
        saved: list[tuple[Tensor, Tensor]] = []
        self._swapped.append(saved)
        try:
            with torch.no_grad():
                for name, p in self._named():
                    avg = self.averages.get(name)
                    if avg is not None and avg.shape == p.shape:
                        saved.append((p, p.detach().clone()))
                        p.copy_(avg)
            yield
        finally:
            _write(reversed(saved))
            self._swapped.pop()

    @contextmanager
    def raw(self) -> Iterator[None]:
        """The raw values in place inside the block, also where an enclosing :meth:`applied` holds the
        averages (to checkpoint the training state from inside it); outside one, nothing changes."""
        if not self._swapped:
            yield
            return
        outer = self._swapped[0]
        current = [(p, p.detach().clone()) for p, _ in outer]
        _write(outer)
        try:
            yield
        finally:
            _write(reversed(current))

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "ramp": self.ramp,
            "num_updates": self.num_updates,
            "averages": {name: avg.clone() for name, avg in self.averages.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The averages and update count of ``state``; the decay and ramp stay this object's own."""
        if not isinstance(state, Mapping) or "averages" not in state or "num_updates" not in state:
            what = "it has no averages or num_updates" if isinstance(state, Mapping) else type(state).__name__
            raise CheckpointError(f"not a ParameterEMA state: {what}")
        averages, num_updates = state["averages"], int(state["num_updates"])
        current = dict(self._named())
        for name, avg in averages.items():
            p = current.get(name)
            if p is not None and p.shape != avg.shape:
                raise CheckpointError(
                    f"the average of parameter {name!r} has shape {tuple(avg.shape)}, the parameter "
                    f"{tuple(p.shape)}: the state is of another model"
                )
        self.averages = {}
        for name, avg in averages.items():  # on the parameter's device and dtype, where it has one
            like = current.get(name, avg)
            self.averages[name] = avg.detach().to(device=like.device, dtype=like.dtype).clone()
        self.num_updates = num_updates


@torch.no_grad()
def _write(pairs: Iterable[tuple[Tensor, Tensor]]) -> None:
    """Copy each value into its parameter, in place."""
    for p, value in pairs:
        p.copy_(value)
