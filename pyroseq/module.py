"""How pyroseq's models and guides meet Pyro: one name per instance in the param store, checked inputs,
counted optimisation steps.

Pyro keys every module parameter by its name in the global param store. Instances that all called
themselves ``model`` would alias each other: a second model trained with plain ``SVI`` in the same process
would be scored with its own weights while the optimiser updated the first one's (it silently would not
train). So every instance takes a name of its own: ``name=`` (Pyro's convention for a module's prefix),
or else ``model``, ``model_2``, ``model_3``, ... in order of construction (``guide``, ``guide_2``, ... for
guides). The counter is per process and ``pyro.clear_param_store()`` does not reset it: pass ``name=``
wherever parameters are saved and loaded.

That makes Pyro's own saving round-trip: after ``pyro.get_param_store().load(path)`` (or ``set_state``),
the next call of a module whose names the store holds copies the stored values into the module, the way
``pyro.module(name, m, update_module_params=True)`` does, and hands the store the module's own tensors
again, so that training continues on them. A store that holds parameters of this module's shape under
another module's name (saved from ``model`` and loaded into ``model_2``), but none under its own, gives a
warning naming both. The recipe pyroseq itself uses is ``state_dict`` (see :func:`pyroseq.runs.save_run`).

Every call checks its inputs with :func:`pyroseq.checks.check_inputs` before ``forward`` runs, so a model
and its guide (which Pyro runs first) reject bad input with the same message. A call with gradients on
also checks that the module's parameters are finite, and a model replayed against a guide's trace (what
every ELBO does) checks that the guide drew the model's latent sites, and finite values there: a diverged
run or a guide with other sites stops with one line instead of a page of tensors from Pyro.

Every module counts the optimisation steps taken on its parameters in :attr:`PyroseqModule.optimiser_steps`:
a hook on every ``torch.optim.Optimizer`` step (Pyro's ``Adam``, ``ClippedAdam``, ``SGD``, every
``PyroOptim`` and ``pyro.optim.lr_scheduler`` wrapper hold torch optimisers, so it counts those too, however
they write the parameters). An update that is not a torch optimiser's step is counted with
:meth:`PyroseqModule.advance`.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from pyro.nn import PyroModule
from pyro.params.param_store import param_with_module_name
from pyro.poutine.replay_messenger import ReplayMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

from pyroseq.checks import check_inputs
from pyroseq.errors import CheckpointError, ConfigError, NonFiniteError

__all__ = ["PyroseqModule", "param_store_names", "module_device", "load_modules"]

_COUNTERS: dict[str, Iterator[int]] = {}
_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[PyroseqModule] = weakref.WeakSet()  # every module built, while it lives
# id -> parameter, for every parameter a module handed the param store, while it lives
_OWNED: weakref.WeakValueDictionary[int, Tensor] = weakref.WeakValueDictionary()


def _count_optimiser_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """After any torch optimiser's step: one more step for every live module whose parameters it holds and
    that ran with gradients since its latest counted step (``PyroOptim`` steps one torch optimiser per
    parameter: all of them together are one step)."""
    waiting = [module for module in list(_LIVE) if module._ran_since_step]
    if not waiting:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for module in waiting:
        if any(id(p) in held for p in module.optimised_parameters()):
            module.optimiser_steps += 1
            module._ran_since_step = False


register_optimizer_step_post_hook(_count_optimiser_step)


def _instance_name(role: str) -> str:
    with _LOCK:
        n = next(_COUNTERS.setdefault(role, itertools.count(1)))
    return role if n == 1 else f"{role}_{n}"


def param_store_names(module: PyroModule) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """``(param-store name, parameter)`` of every parameter of ``module``, as Pyro names them.

    A parameter of a ``PyroModule`` is ``<module name>.<attribute>``; one of a plain ``nn.Module``
    attribute ``m`` (registered by ``pyro.module``) is ``<module name>.m$$$<parameter path>``.
    """
    for name, p in module.named_parameters(recurse=False):
        yield f"{module._pyro_name}.{name}", p
    for name, child in module.named_children():
        if isinstance(child, PyroModule):
            yield from param_store_names(child)
        else:
            prefix = f"{module._pyro_name}.{name}"
            for path, p in child.named_parameters():
                yield param_with_module_name(prefix, path), p


def _replayed_trace() -> Trace | None:
    """The trace that an enclosing ``poutine.replay`` replays (an ELBO's guide trace), or None."""
    for messenger in reversed(_PYRO_STACK):
        if isinstance(messenger, ReplayMessenger) and messenger.trace is not None:
            return messenger.trace
    return None


class PyroseqModule(PyroModule):
    """Base of pyroseq's models and guides: a ``PyroModule`` with a name of its own, called as
    ``module(ids, mask)``.

    Args:
        role: ``"model"`` or ``"guide"``, the stem of the default name.
        vocab_size: V, the number of symbols the inputs may hold.
        name: the prefix of the module's parameters in Pyro's param store (``"<name>.emitter.weight"``);
            ``None``: ``role``, ``role_2``, ... in order of construction in this process.

    Attributes:
        optimiser_steps: the torch optimiser steps taken on the module's parameters after a call with
            gradients, plus the :meth:`advance` calls.
    """

    def __init__(self, *, role: str, vocab_size: int, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name or "." in name):
            raise ConfigError(f"name must be a non-empty string without '.', got {name!r}")
        super().__init__(name=_instance_name(role) if name is None else name)
        self.vocab_size = vocab_size
        self.optimiser_steps = 0
        self._ran_since_step = False
        self._warned_store = False
        _LIVE.add(self)

    def __call__(self, ids: Tensor | None, mask: Tensor, **kwargs: Any) -> Any:
        if torch.jit.is_tracing():  # JitTrace_ELBO: refused here, before torch's error of a page of tensors
            self.require_traceable()
        ids, mask = self.checked_inputs(ids, mask)
        self._restore_from_param_store()
        if torch.is_grad_enabled():
            self._check_finite_parameters()
            self._ran_since_step = True
        self._check_replayed_sites(mask)
        return super().__call__(ids, mask, **kwargs)

    @property
    def supports_jit(self) -> bool:
        """Whether ``JitTrace_ELBO`` may trace this module: False when training depends on Python values
        (a teacher probability, a discriminator's accuracy) that a trace would freeze."""
        return True

    def require_traceable(self) -> None:
        """Raise :class:`~pyroseq.errors.ConfigError` unless ``JitTrace_ELBO`` may trace this module
        (:attr:`supports_jit`): the one refusal of the trainer's ``jit=True`` and of a call under a trace."""
        if not self.supports_jit:
            raise ConfigError(
                f"jit=True cannot trace {type(self).__name__} as configured: its training depends on Python "
                "values (a teacher probability, a discriminator's accuracy) that a trace would freeze; "
                "drop jit=True",
                params=("jit",),
            )

    def checked_inputs(self, ids: Tensor | None, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        """The inputs checked by :func:`pyroseq.checks.check_inputs` (a module that reads frames instead of
        symbol ids checks them its own way)."""
        return check_inputs(ids, mask, vocab_size=self.vocab_size, who=type(self).__name__)

    def advance(self) -> None:
        """Count one optimisation step that was not a torch optimiser's (a hand-written update).

        Torch optimisers' steps are counted without it (see :mod:`pyroseq.module`); what advances with
        the step (a teacher schedule, a discriminator) follows this count.
        """
        self.optimiser_steps += 1

    def optimised_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the SVI optimiser trains, whose steps :attr:`optimiser_steps` counts (all by
        default; an adversary may train its own)."""
        return list(self.parameters())

    def latent_shapes(self, mask: Tensor) -> dict[str, tuple[int, ...]]:
        """The latent sites a guide must draw for this model, with their shapes, for ``mask`` ``(B, T)``
        (none by default)."""
        return {}

    @torch.no_grad()
    def _check_finite_parameters(self) -> None:
        """Raise :class:`~pyroseq.errors.NonFiniteError` naming the first parameter that is NaN or inf."""
        params = list(self.parameters())
        if not params or torch.isfinite(torch.nn.utils.get_total_norm(params, norm_type=math.inf)):
            return
        name = next(n for n, p in self.named_parameters() if not torch.isfinite(p).all())
        raise NonFiniteError(
            f"{type(self).__name__} {self._pyro_name!r}: parameter {name!r} is not finite after "
            f"{self.optimiser_steps} optimisation steps: training diverged; lower the learning rate"
        )

    def _check_replayed_sites(self, mask: Tensor) -> None:
        """Under ``poutine.replay`` (every ELBO replays the model against the guide's trace): refuse a
        guide that draws latent sites but not this model's, and non-finite values at the model's sites."""
        shapes = self.latent_shapes(mask)
        trace = _replayed_trace() if shapes else None
        if trace is None:
            return
        for name, shape in shapes.items():
            if name in trace.nodes:
                if not torch.isfinite(trace.nodes[name]["value"]).all():
                    raise NonFiniteError(
                        f"the guide's sample at site {name!r} is not finite after {self.optimiser_steps} "
                        "optimisation steps: training diverged; lower the learning rate"
                    )
                continue
            drawn = [
                n
                for n, s in trace.nodes.items()
                if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
            ]
            if drawn:
                listed = ", ".join(repr(n) for n in drawn[:3]) + (", ..." if len(drawn) > 3 else "")
                raise ConfigError(
                    f"the guide draws {listed} but not the {type(self).__name__}'s latent site {name!r}, "
                    f"the whole state trajectory of shape {shape} (B, T, D): write one site "
                    f"pyro.sample({name!r}, ...) of event shape {shape[-2:]} in the plate 'seqs'"
                )

    @torch.no_grad()
    def _restore_from_param_store(self) -> None:
        """Copy values that the param store holds under this module's names but in other tensors (a
        loaded store) into the module, and give the store the module's own tensors back."""
        own = dict(param_store_names(self))
        _OWNED.update((id(p), p) for p in own.values())
        store = pyro.get_param_store()
        if not len(store):
            return
        stored = dict(store.named_parameters())  # unconstrained values, as the module holds them
        if not own.keys() & stored.keys():
            self._warn_foreign_names(stored, own)
        for name, p in own.items():
            value = stored.get(name)
            if value is None or value is p:
                continue
            if value.shape != p.shape:
                raise CheckpointError(
                    f"the Pyro param store holds {name!r} with shape {tuple(value.shape)}, but this "
                    f"{type(self).__name__} has {tuple(p.shape)}: it was saved from another configuration; "
                    "build the model as it was saved, or call pyro.clear_param_store()"
                )
            p.copy_(value)
            del store[name]  # the module's next pyro.param statement registers ``p`` itself

    def _warn_foreign_names(self, stored: dict[str, Tensor], own: dict[str, Tensor]) -> None:
        """Warn (once) if the store holds, under another module's name, values that no module owns (a
        loaded store) for every parameter this module has: they were saved from a module with another name."""
        if self._warned_store:
            return
        suffixes = {name[len(self._pyro_name) :] for name in own}  # ".emitter.bias", ...
        by_prefix: dict[str, set[str]] = {}
        for name, value in stored.items():
            if "." in name and _OWNED.get(id(value)) is not value:  # not a module's own tensor: loaded
                prefix, suffix = name.split(".", 1)
                by_prefix.setdefault(prefix, set()).add(f".{suffix}")
        foreign = sorted(prefix for prefix, held in by_prefix.items() if suffixes <= held)
        if foreign:
            self._warned_store = True
            warnings.warn(
                f"the Pyro param store holds {type(self).__name__} parameters under "
                f"{', '.join(repr(n) for n in foreign)} but none under this one's name "
                f"{self._pyro_name!r}, so it loads nothing: build it with name={foreign[0]!r}",
                stacklevel=1,
            )


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer; the CPU for a module that holds none."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def load_modules(model: torch.nn.Module, guide: Any, state: dict[str, Any]) -> None:
    """Load a model's and guide's weights, and the model's extra state, from a checkpoint's ``state``
    (``"model"``, ``"guide"`` for a guide that is a module, ``"model_extra"``): what the trainer
    resumes from and what :func:`pyroseq.runs.load_run` restores."""
    model.load_state_dict(state["model"])
    if isinstance(guide, torch.nn.Module):
        guide.load_state_dict(state["guide"])
    model.load_extra_state_dict(state.get("model_extra", {}))
