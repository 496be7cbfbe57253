"""Old import paths of moved modules and names, kept working for one release with a ``DeprecationWarning``.

Issue 25 moved a run's bookkeeping out of :mod:`pyroseq.infer` into :mod:`pyroseq.runs`, the prefix tree into
:mod:`pyroseq.data.trie` and the prefix-tree filter into :mod:`pyroseq.infer.smc`. ``from pyroseq.infer import
load_run`` and ``import pyroseq.infer.rundir`` still work (warning once where they are imported); no file
stands at the old paths, so that the modules' history follows them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["alias_modules", "moved_names"]


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=3
    )


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``old`` as the module at ``new`` (the same module object), warning."""

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = moved

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in self.moved else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(spec.name, self.moved[spec.name])
        return importlib.import_module(self.moved[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran where it lives now."""


def alias_modules(moved: dict[str, str]) -> None:
    """Make each old module path (key) import the module at its new path (value), with a warning."""
    sys.meta_path.insert(0, _Aliases(moved))


def moved_names(package: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that hands out each moved name (key) from its new module
    (value), with a warning."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        _warn(f"{package}.{name}", f"{moved[name]}.{name}")
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__
