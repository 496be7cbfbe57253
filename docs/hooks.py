"""MkDocs hooks: generate the API reference and the tutorial pages at build time.

* **API reference**: one page per public top-level module of ``pyroseq`` (``reference/<name>.md``), found by
  walking the package with griffe (static analysis, no import). A package's page shows its docstring and the
  names it defines itself, then every submodule with the names in its ``__all__``; names a package only
  re-exports are documented once, where they are defined. A module or name added to the package appears
  without editing any page.
* **Tutorials**: every ``docs/tutorials/NN_name.py`` is a percent-format script (see ``docs/notebook.py``).
  It becomes ``tutorials/NN_name.md``: its text, its code as code blocks, and the output each code cell
  printed when ``docs/notebook.py`` last ran it, so the page shows exactly the code that produced its
  outputs and figures (``docs/tutorials/img/``).
"""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path

import griffe
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from griffe_sphinx import NOT_DOCUMENTED, is_rendered  # noqa: E402
from notebook import cells, digest  # noqa: E402

log = logging.getLogger("mkdocs.hooks.tutorials")

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = Path(__file__).resolve().parent / "tutorials"
# The order data flows in (DESIGN.md); modules not named here follow, alphabetically.
ORDER = ["data", "flows", "models", "guides", "infer", "runs", "evaluate", "decode", "predictive"]


def _public_modules() -> list[griffe.Module]:
    package = griffe.load("pyroseq", search_paths=[str(ROOT)])
    modules = [
        member
        for name, member in package.members.items()
        if not member.is_alias
        and member.is_module
        and name not in NOT_DOCUMENTED
        and not name.startswith("_")
    ]
    return sorted(modules, key=lambda m: (ORDER.index(m.name) if m.name in ORDER else len(ORDER), m.name))


def _own_names(module: griffe.Module) -> list[str]:
    """The names in ``module.__all__`` that the module defines itself (not re-exports)."""
    exported = module.exports or [n for n in module.members if not n.startswith("_")]
    return [str(n) for n in exported if n in module.members and not module.members[n].is_alias]


def _directive(path: str, *, heading_level: int, members: list[str] | None) -> str:
    lines = [f"::: {path}", "    options:", f"      heading_level: {heading_level}"]
    if members is not None:
        lines.append(f"      members: [{', '.join(members)}]" if members else "      members: false")
        lines.append("      show_submodules: false")
    return "\n".join(lines) + "\n"


def _link(name: str, target: griffe.Object) -> str:
    return f"[`{name}`][{target.path}]" if is_rendered(target) else f"`{name}`"


def _submodules(module: griffe.Module) -> list[griffe.Module]:
    found = []
    for name, member in sorted(module.members.items()):
        if not member.is_alias and member.is_module and not name.startswith("_"):
            found.append(member)
            found.extend(_submodules(member))
    return found


def reference_page(module: griffe.Module) -> str:
    """The markdown of one reference page: the module, then (for a package) each of its submodules."""
    if not module.is_init_module:
        return _directive(module.path, heading_level=1, members=None)
    parts = [_directive(module.path, heading_level=1, members=_own_names(module))]
    reexported = [module.members[n] for n in (module.exports or []) if n in module.members]
    links = [_link(a.name, a.final_target) for a in reexported if a.is_alias]
    if links:
        names = ", ".join(links)
        parts.append(f"Importable from `{module.path}`, documented below where they are defined: {names}.\n")
    parts += [_directive(sub.path, heading_level=2, members=None) for sub in _submodules(module)]
    return "\n".join(parts)


def reference_index(modules: list[griffe.Module]) -> str:
    rows = ["# API reference", "", "| module | what it holds |", "|---|---|"]
    for module in modules:
        summary = module.docstring.value.splitlines()[0] if module.docstring else ""
        rows.append(f"| [`{module.path}`]({module.name}.md) | {summary} |")
    rows.append("")
    rows.append("Every page is generated from the docstrings when the site is built (`docs/hooks.py`).")
    return "\n".join(rows) + "\n"


def tutorial_page(path: Path) -> str:
    """The markdown page of one tutorial script: its text, its code and what each code cell printed."""
    recorded = path.parent / "img" / f"{path.stem}.outputs.json"
    record = json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file() else {}
    outputs, size = record.get("cells", []), record.get("size")
    out, n = [], 0
    for i, (kind, text, _) in enumerate(cells(path.read_text(encoding="utf-8"))):
        if kind == "markdown":
            out.append(text)
        else:
            out.append(f"```python\n{text}\n```")
            if n < len(outputs) and outputs[n]["source"] == digest(text):
                if outputs[n]["output"].strip():
                    out.append(f"```text\n{outputs[n]['output'].rstrip()}\n```")
            else:
                log.info(
                    "%s: cell %d changed since its output was recorded: run docs/notebook.py", path.name, n
                )
            n += 1
        if i == 0:
            out.append(
                f'!!! note "Run this page"\n    This page is the script [`{path.name}`]({path.name})'
                f" (`docs/tutorials/{path.name}` in the repository): its code, what each cell printed and the"
                f" figures it drew, recorded by `python docs/notebook.py docs/tutorials/{path.name}`."
                " CI runs it at a tiny size with `--smoke`."
            )
            if size == "smoke":
                out.append(
                    '!!! warning "Recorded at the smoke size"\n    The outputs and figures on this page come'
                    " from a `--smoke` run (a few steps on a few hundred words): they show what the code"
                    " prints and draws, not what a trained model looks like. Run the script for those."
                )
    return "\n\n".join(out) + "\n"


def _title(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or path.stem
    return docstring.splitlines()[0].lstrip("# ").strip()


def tutorial_scripts() -> list[Path]:
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    tutorials = [{_title(p): f"tutorials/{p.stem}.md"} for p in tutorial_scripts()]
    reference = [{"Overview": "reference/index.md"}]
    reference += [{m.path: f"reference/{m.name}.md"} for m in _public_modules()]
    if tutorials:
        config.nav.insert(1, {"Tutorials": tutorials})
    config.nav.append({"API reference": reference})
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    modules = _public_modules()
    files.append(File.generated(config, "reference/index.md", content=reference_index(modules)))
    for module in modules:
        files.append(File.generated(config, f"reference/{module.name}.md", content=reference_page(module)))
    for script in tutorial_scripts():
        files.append(File.generated(config, f"tutorials/{script.stem}.md", content=tutorial_page(script)))
    return files
