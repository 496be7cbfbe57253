"""Sampled mutation testing of pyroseq with cosmic-ray: a score the shared machine can afford.

cosmic-ray enumerates every mutant of the chosen modules (``cosmic-ray init``); this script keeps the
operators that make meaningful one-line bugs (arithmetic and comparison swaps, negations, constants,
booleans, and/or, empty loops), draws a fixed-seed sample per module, applies each mutant with
``cosmic-ray apply`` to a private copy of the source tree and runs only the test files that guard that
module (``pytest -x``). A mutant is killed when the tests fail (or time out) and survives when they pass.

    python tools/mutation_sample.py --tree /tmp/mut-tree --per-module 3 --seed 0 --out mutants.json
    python tools/mutation_sample.py --tree /tmp/mut-tree --only-survivors-of mutants.json --out after.json

``--tree`` is a copy of the repository (e.g. ``git archive HEAD | tar -x -C DIR``); it is changed in place
one mutant at a time and restored after each. Not part of CI: a run takes tens of minutes.
Requires ``pip install cosmic-ray`` (a development tool, not a pyroseq dependency).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Each module and the test files that guard it.
GUARDS: dict[str, list[str]] = {
    "pyroseq/flows": ["tests/test_flows.py", "tests/test_contract.py"],
    "pyroseq/models/dssm.py": ["tests/test_dssm.py", "tests/test_contract.py", "tests/test_defaults.py"],
    "pyroseq/models/base.py": ["tests/test_dssm.py", "tests/test_rnn.py", "tests/test_contract.py"],
    "pyroseq/models/rnn.py": ["tests/test_rnn.py", "tests/test_professor.py", "tests/test_contract.py"],
    "pyroseq/models/professor.py": [
        "tests/test_rnn.py",
        "tests/test_professor.py",
        "tests/test_contract.py",
        "tests/test_train.py",
    ],
    "pyroseq/models/schedules.py": ["tests/test_rnn.py", "tests/test_train.py"],
    "pyroseq/guides": ["tests/test_dssm.py", "tests/test_contract.py", "tests/test_defaults.py"],
    "pyroseq/evaluate": ["tests/test_evaluate.py", "tests/test_smc.py"],
    "pyroseq/infer/trainer.py": ["tests/test_train.py"],
    "pyroseq/runs/config.py": ["tests/test_train.py", "tests/test_faults.py"],
    "pyroseq/runs/train.py": ["tests/test_train.py", "tests/test_faults.py"],
    "pyroseq/runs/rundir.py": ["tests/test_train.py", "tests/test_faults.py", "tests/test_pyro_native.py"],
    "pyroseq/runs/guard.py": ["tests/test_train.py", "tests/test_faults.py"],
    "pyroseq/runs/specs.py": ["tests/test_train.py", "tests/test_contract.py"],
    "pyroseq/infer/objectives.py": ["tests/test_objectives.py"],
    "pyroseq/infer/annealing.py": ["tests/test_annealing.py"],
    "pyroseq/runs/checkpoint.py": ["tests/test_faults.py", "tests/test_train.py"],
    "pyroseq/infer/smc.py": ["tests/test_smc.py", "tests/test_complete.py"],
    "pyroseq/decode.py": ["tests/test_decode.py"],
    "pyroseq/complete.py": ["tests/test_complete.py"],
    "pyroseq/predictive.py": ["tests/test_predictive.py"],
    "pyroseq/data": ["tests/test_data.py"],
}

# Operators kept: one-line bugs a reviewer could plant. Left out: swaps into bit or shift operators
# (mostly type errors), exception-type and variable replacements, and decorator removal.
KEEP = re.compile(
    r"core/(ReplaceBinaryOperator_(Add|Sub|Mul|Div|Pow)_(Add|Sub|Mul|Div)"
    r"|ReplaceComparisonOperator_(Lt|LtE|Gt|GtE|Eq|NotEq)_(Lt|LtE|Gt|GtE|Eq|NotEq)"
    r"|ReplaceUnaryOperator_\w+|AddNot|NumberReplacer|ReplaceTrueWithFalse|ReplaceFalseWithTrue"
    r"|ReplaceAndWithOr|ReplaceOrWithAnd|ZeroIterationForLoop|ReplaceBreakWithContinue)$"
)


def modules(tree: Path) -> dict[str, list[str]]:
    """Every source file to mutate and its guarding tests (those that exist in ``tree``)."""
    out = {}
    for target, tests in GUARDS.items():
        files = sorted((tree / target).glob("*.py")) if (tree / target).is_dir() else [tree / target]
        for f in files:
            if f.exists() and f.name != "__init__.py":
                out[str(f.relative_to(tree))] = [t for t in tests if (tree / t).exists()]
    return out


def enumerate_mutants(tree: Path, paths: list[str]) -> list[dict]:
    config = tree / "cosmic-ray.toml"
    listed = ", ".join(json.dumps(p) for p in paths)
    config.write_text(
        f"[cosmic-ray]\nmodule-path = [{listed}]\ntimeout = 600.0\nexcluded-modules = []\n"
        'test-command = "true"\n[cosmic-ray.distributor]\nname = "local"\n'
    )
    session = tree / "cosmic-ray.sqlite"
    session.unlink(missing_ok=True)
    subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=tree, check=True)
    dump = subprocess.run(
        ["cosmic-ray", "dump", str(session)], cwd=tree, check=True, capture_output=True, text=True
    )
    mutants = []
    for line in dump.stdout.splitlines():
        item, _ = json.loads(line)
        (m,) = item["mutations"]
        if KEEP.match(m["operator_name"]):
            mutants.append(m)
    mutants.sort(key=lambda m: (m["module_path"], m["start_pos"], m["operator_name"], m["occurrence"]))
    return mutants


def key(m: dict) -> str:
    return f"{m['module_path']}:{m['operator_name']}:{m['occurrence']}"


def run_one(tree: Path, m: dict, tests: list[str], timeout: float) -> dict:
    path = tree / m["module_path"]
    original = path.read_text()
    backup = path.with_suffix(".py.orig")
    shutil.copyfile(path, backup)
    try:
        subprocess.run(
            ["cosmic-ray", "apply", m["module_path"], m["operator_name"], str(m["occurrence"])],
            cwd=tree,
            check=True,
            capture_output=True,
        )
        mutated = path.read_text()
        line = m["start_pos"][0]
        before = original.splitlines()[line - 1].strip()
        after = mutated.splitlines()[line - 1].strip() if mutated != original else before
        began = time.perf_counter()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=tree,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            outcome = "survived" if result.returncode == 0 else "killed"
            tail = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else []
        except subprocess.TimeoutExpired:
            outcome, tail = "killed (timeout)", []
        return {
            **m,
            "key": key(m),
            "line": line,
            "before": before,
            "after": after,
            "outcome": outcome,
            "tests": tests,
            "seconds": round(time.perf_counter() - began, 1),
            "pytest": tail,
        }
    finally:
        shutil.copyfile(backup, path)
        backup.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True, help="a copy of the repository, mutated in place")
    parser.add_argument("--per-module", type=int, default=3, help="mutants drawn per source file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (a kill)")
    parser.add_argument("--only-survivors-of", type=Path, help="re-run the survivors of an earlier result")
    parser.add_argument("--modules", nargs="+", help="mutate only source files under these paths")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one mutant each")
    args = parser.parse_args()
    tree = args.tree.resolve()
    guards = modules(tree)
    if args.modules:
        guards = {path: tests for path, tests in guards.items() if path.startswith(tuple(args.modules))}
    mutants = enumerate_mutants(tree, sorted(guards))
    if args.only_survivors_of:
        earlier = [json.loads(x) for x in args.only_survivors_of.read_text().splitlines()]
        wanted = {r["key"] for r in earlier if r["outcome"] == "survived"}
        sample = [m for m in mutants if key(m) in wanted]
    else:
        rng = random.Random(args.seed)
        sample = []
        for path in sorted(guards):
            mine = [m for m in mutants if m["module_path"] == path]
            sample += rng.sample(mine, min(args.per_module, len(mine)))
    print(f"{len(mutants)} mutants kept of the chosen operators; running {len(sample)}", flush=True)
    killed = 0
    with args.out.open("w") as out:
        for i, m in enumerate(sample, 1):
            r = run_one(tree, m, guards[m["module_path"]], args.timeout)
            killed += r["outcome"] != "survived"
            out.write(json.dumps(r) + "\n")
            out.flush()
            print(
                f"[{i}/{len(sample)}] {r['outcome']:16} {r['module_path']}:{r['line']} "
                f"{r['before']!r} -> {r['after']!r} ({r['seconds']} s)",
                flush=True,
            )
    print(f"score: {killed}/{len(sample)} killed ({100 * killed / max(len(sample), 1):.0f}%)")


if __name__ == "__main__":
    main()
