"""The package's imports run one way: data -> flows -> models, guides -> infer -> evaluate, decode,
predictive -> complete -> cli (every import statement, including those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pyroseq

# The layer of each top-level part of the package; a module may import only from lower layers and its own
# part. Models and guides share a layer but must not import each other; the foundation (layer 0: errors,
# size and input checks, plates, the models' and guides' PyroModule base, data) is shared by all.
LAYERS = {
    "errors": 0, "checks": 0, "plates": 0, "module": 0, "data": 0,
    "flows": 1, "emissions": 1,
    "models": 2, "guides": 2,
    "infer": 3,
    "evaluate": 4, "decode": 4, "predictive": 4,
    "complete": 5,  # prefix completion: decodes (decode) and weighs completions by the tree filter (evaluate)
    "cli": 6, "__main__": 7,
}  # fmt: skip

ROOT = Path(pyroseq.__file__).parent


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _imports(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyroseq."):
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(a.name for a in node.names if a.name.startswith("pyroseq."))
    return modules


def test_every_module_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert parts - {"__init__", "__pycache__"} <= set(LAYERS)


def test_imports_run_one_way():
    wrong = []
    for path in ROOT.rglob("*.py"):
        here = _part("pyroseq." + ".".join(path.relative_to(ROOT).with_suffix("").parts))
        if here == "__init__":
            continue
        for module in _imports(path):
            there = _part(module)
            if there != here and (LAYERS[there] > LAYERS[here] or LAYERS[there] == LAYERS[here] > 0):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []
