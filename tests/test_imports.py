"""The package's imports run one way: data -> flows -> models, guides -> infer -> runs -> evaluate, decode,
predictive -> complete -> cli (every import statement, including those inside functions); inside a part no
two modules import each other, however indirectly; and loading a run needs nothing of the training loop."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import pyroseq

# The layer of each top-level part of the package; a module may import only from lower layers and its own
# part. Models and guides share a layer but must not import each other; the foundation (layer 0: errors,
# size and input checks, plates, the models' and guides' PyroModule base, data, the old paths of moved
# names) is shared by all.
LAYERS = {
    "errors": 0, "checks": 0, "plates": 0, "module": 0, "data": 0, "moved": 0,
    "flows": 1, "emissions": 1,
    "models": 2, "guides": 2,
    "infer": 3,  # inference: objectives, annealing, the Trainer, the particle filter
    "runs": 4,  # a run's configuration, checkpoints, directory and train_run
    "evaluate": 5, "decode": 5, "predictive": 5,
    "complete": 6,  # prefix completion: decodes (decode) and weighs completions by the tree filter (infer)
    "cli": 7, "__main__": 8,
}  # fmt: skip

ROOT = Path(pyroseq.__file__).parent


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("pyroseq", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _imports(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyroseq."):
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(a.name for a in node.names if a.name.startswith("pyroseq."))
    return modules


def _graph() -> dict[str, set[str]]:
    """Module -> the pyroseq modules it imports (a name imported from a package counts as the package)."""
    modules = {_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {m for m in _imports(path.read_text()) if m in modules} for name, path in modules.items()}


def test_every_module_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert parts - {"__init__", "__pycache__"} <= set(LAYERS)


def test_imports_run_one_way():
    wrong = []
    for path in ROOT.rglob("*.py"):
        here = _part("pyroseq." + ".".join(path.relative_to(ROOT).with_suffix("").parts))
        if here == "__init__":
            continue
        for module in _imports(path.read_text()):
            there = _part(module)
            if there != here and (LAYERS[there] > LAYERS[here] or LAYERS[there] == LAYERS[here] > 0):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle of ``graph`` once, as the modules along it."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycle = path[path.index(nxt) :]
                if frozenset(cycle) not in done:
                    done.add(frozenset(cycle))
                    found.append(cycle)
            elif nxt not in visited:
                visit(nxt, [*path, nxt])
        visited.add(node)

    visited: set[str] = set()
    for start in sorted(graph):
        if start not in visited:
            visit(start, [start])
    return found


def test_no_import_circle_inside_a_part():
    # A package's __init__ re-exports its modules; the modules themselves must not import each other in a
    # loop (evaluate/words.py and evaluate/smc.py once did, hidden by an import inside a function).
    graph = {m: {n for n in deps if not (ROOT / Path(*n.split(".")[1:]) / "__init__.py").exists()}
             for m, deps in _graph().items()}  # fmt: skip
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_circle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert [sorted(c) for c in _cycles(graph)] == [["a", "b", "c"]]
    source = "def f():\n    from pyroseq.evaluate.words import WordLogProbs\n"
    assert _imports(source) == ["pyroseq.evaluate.words"]


def test_loading_a_run_needs_nothing_of_the_training_loop():
    # What load_run's module imports, however indirectly (packages' __init__ aside: they only re-export).
    graph = _graph()
    seen, todo = set(), ["pyroseq.runs.rundir"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(
                n for n in graph[module] if not (ROOT / Path(*n.split(".")[1:]) / "__init__.py").exists()
            )
    assert "pyroseq.infer.trainer" not in seen and "pyroseq.runs.train" not in seen
    assert "pyroseq.runs.config" in seen  # the walk does follow imports


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("pyroseq.infer.rundir", "pyroseq.runs.rundir", "load_run"),
        ("pyroseq.infer.config", "pyroseq.runs.config", "RunConfig"),
        ("pyroseq.infer.run", "pyroseq.runs.train", "train_run"),
        ("pyroseq.evaluate.smc", "pyroseq.infer.smc", "prefix_tree_log_evidence"),
        ("pyroseq.evaluate.trie", "pyroseq.data.trie", "PrefixTree"),
    ],
)
def test_a_moved_module_imports_from_its_old_path_with_a_warning(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_a_moved_name_imports_from_its_old_package_with_a_warning():
    import pyroseq.infer
    from pyroseq.runs import load_run

    with pytest.warns(DeprecationWarning, match="pyroseq.infer.load_run moved to pyroseq.runs.rundir"):
        assert pyroseq.infer.load_run is load_run
    with pytest.raises(AttributeError):
        pyroseq.infer.no_such_name  # noqa: B018
