"""How pyroseq's models and guides meet Pyro: one name per instance in the param store, checked inputs.

Pyro keys every module parameter by its name in the global param store. Instances that all called
themselves ``model`` would alias each other: a second model trained with plain ``SVI`` in the same process
would be scored with its own weights while the optimiser updated the first one's (it silently would not
train). So every instance takes a name of its own: ``model``, ``model_2``, ``model_3``, ... in order of
construction (``guide``, ``guide_2``, ... for guides), which a fresh process that builds its modules in the
same order meets again.

That makes Pyro's own saving round-trip: after ``pyro.get_param_store().load(path)`` (or ``set_state``),
the next call of a module whose names the store holds copies the stored values into the module, the way
``pyro.module(name, m, update_module_params=True)`` does, and hands the store the module's own tensors
again, so that training continues on them. The recipe pyroseq itself uses is ``state_dict`` (see
:func:`pyroseq.runs.save_run`).

Every call checks its inputs with :func:`pyroseq.checks.check_inputs` before ``forward`` runs, so a model
and its guide (which Pyro runs first) reject bad input with the same message.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from pyro.nn import PyroModule
from pyro.params.param_store import param_with_module_name
from torch import Tensor

from pyroseq.checks import check_inputs
from pyroseq.errors import CheckpointError

__all__ = ["PyroseqModule", "param_store_names", "module_device", "load_modules"]

_COUNTERS: dict[str, Iterator[int]] = {}
_LOCK = threading.Lock()


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


class PyroseqModule(PyroModule):
    """Base of pyroseq's models and guides: a ``PyroModule`` with a name of its own, called as
    ``module(ids, mask)``.

    Args:
        role: ``"model"`` or ``"guide"``, the stem of the instance's name.
        vocab_size: V, the number of symbols the inputs may hold.
    """

    def __init__(self, *, role: str, vocab_size: int) -> None:
        super().__init__(name=_instance_name(role))
        self.vocab_size = vocab_size

    def __call__(self, ids: Tensor | None, mask: Tensor, **kwargs: Any) -> Any:
        ids, mask = self.checked_inputs(ids, mask)
        self._restore_from_param_store()
        return super().__call__(ids, mask, **kwargs)

    def checked_inputs(self, ids: Tensor | None, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        """The inputs checked by :func:`pyroseq.checks.check_inputs` (a module that reads frames instead of
        symbol ids checks them its own way)."""
        return check_inputs(ids, mask, vocab_size=self.vocab_size, who=type(self).__name__)

    @torch.no_grad()
    def _restore_from_param_store(self) -> None:
        """Copy values that the param store holds under this module's names but in other tensors (a
        loaded store) into the module, and give the store the module's own tensors back."""
        store = pyro.get_param_store()
        if not len(store):
            return
        stored = dict(store.named_parameters())  # unconstrained values, as the module holds them
        for name, p in param_store_names(self):
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
