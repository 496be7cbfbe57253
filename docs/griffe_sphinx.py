"""A griffe extension: read the Sphinx markup in pyroseq's docstrings as the Markdown mkdocstrings renders.

* ``:class:`~pyroseq.models.rnn.RNNLM``` (and ``:func:``, ``:meth:``, ``:data:``, ``:attr:``, ``:mod:``,
  ``:exc:``, ``:obj:``) becomes a cross-reference when the name resolves, relative to the docstring's
  class, module or package, to an object the API reference renders; anything else (``pyro.*``, ``torch.*``,
  private names) becomes inline code. A leading ``~`` shows only the last component, as in Sphinx.
* ``.. math::`` blocks become ``$$ ... $$`` and ``:math:`x``` becomes ``$x$`` (rendered by KaTeX).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj):`(~?)([\w.]+)(?:\(\))?`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
NOT_DOCUMENTED = {"cli", "__main__"}  # the command line is documented by `pyroseq --help` and index.md


def _math_blocks(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == ".. math::":
            indent = len(line) - len(line.lstrip())
            body, i = [], i + 1
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            while body and not body[0].strip():
                body.pop(0)
            width = min(len(b) - len(b.lstrip()) for b in body if b.strip())
            pad = " " * indent
            out += [pad + "$$", *(pad + b[width:] if b.strip() else "" for b in body), pad + "$$", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def is_rendered(obj: griffe.Object) -> bool:
    """Whether the API reference (docs/hooks.py, mkdocstrings' options) renders ``obj`` with an anchor."""
    if not obj.is_module and not obj.docstring:
        return False  # mkdocstrings leaves out members without a docstring
    while obj.parent is not None:
        parent = obj.parent
        if obj.name.startswith("_") or (
            parent.is_module and parent.path == "pyroseq" and obj.name in NOT_DOCUMENTED
        ):
            return False
        if parent.is_module and parent.exports is not None and obj.name not in parent.exports:
            if not (obj.is_module and parent.is_init_module):
                return False
        obj = parent
    return True


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles and math of every docstring in the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "pyroseq":
            return
        self.pkg = pkg
        self._rewrite(pkg)

    def _rewrite(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            text = _math_blocks(obj.docstring.value)
            text = MATH_ROLE.sub(r"$\1$", text)
            obj.docstring.value = ROLE.sub(lambda m: self._link(obj, m[1] == "~", m[2]), text)
        for member in obj.members.values():
            if not member.is_alias:
                self._rewrite(member)

    def _link(self, obj: griffe.Object, short: bool, name: str) -> str:
        shown = name.rsplit(".", 1)[-1] if short else name
        scopes = [obj, *self._parents(obj)]
        for candidate in [name, *(f"{scope.path}.{name}" for scope in scopes)]:
            target = self._rendered(candidate)
            if target is not None:
                return f"[`{shown}`][{target}]"
        return f"`{shown}`"

    @staticmethod
    def _parents(obj: griffe.Object) -> list[griffe.Object]:
        found = []
        while obj.parent is not None:
            obj = obj.parent
            found.append(obj)
        return found

    def _rendered(self, path: str) -> str | None:
        """The canonical path of the object at ``path`` if the API reference renders it, else None."""
        parts = path.split(".")
        if parts[0] != "pyroseq" or len(parts) < 2 or parts[1] in NOT_DOCUMENTED:
            return None
        obj: griffe.Object = self.pkg
        try:
            for part in parts[1:]:
                member = obj.members[part]
                obj = member.final_target if member.is_alias else member
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        return obj.path if is_rendered(obj) else None
