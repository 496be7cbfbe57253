"""The word estimators of a DSSM run side by side: CE, its standard error, CPU seconds, K.

Every estimator scores the same words: all the corpus's words, or with --subset S a fixed random subset of
S of them (drawn uniformly without replacement with --seed), against p(w) renormalised over that subset
(so the CE is -sum_{w in S} p(w | S) log q(w), the same weighting for every estimator). Each estimator
spec is NAME:K, or smc:N:R for the prefix-tree filter with R runs. CPU seconds are this process's
(time.process_time), so other jobs on the machine inflate them less than wall-clock time.

    python benchmarks/estimators_side_by_side.py runs/dssm-d16 --subset 1000 \\
        --estimators smc:100:4 prior:1000 iwae:1000 --out runs/side-by-side.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pyroseq.evaluate import word_log_probs, word_metrics
from pyroseq.runs.rundir import load_run


def parse_spec(spec: str) -> tuple[str, int, int | None]:
    name, *numbers = spec.split(":")
    if len(numbers) not in (1, 2) or (len(numbers) == 2 and name != "smc"):
        raise SystemExit(f"error: estimator spec {spec!r}: use NAME:K, or smc:N:R")
    return name, int(numbers[0]), int(numbers[1]) if len(numbers) == 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--estimators", nargs="+", default=["smc:100:4", "prior:1000", "iwae:1000"])
    parser.add_argument("--subset", type=int, default=0, help="score S random words (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    run = load_run(args.run)
    corpus = run.corpus()
    words, probs = corpus.encode(), np.asarray(corpus.probs, dtype=np.float64)
    if args.subset:
        chosen = np.sort(np.random.default_rng(args.seed).choice(len(words), args.subset, replace=False))
        words, probs = [words[i] for i in chosen], probs[chosen]
    scope = f"{len(words)} of {len(corpus.words)} words, p renormalised over them (mass {probs.sum():.4f})"
    print(f"{args.run} (step {run.step}): {scope}", flush=True)
    rows = []
    for spec in args.estimators:
        name, k, repeats = parse_spec(spec)
        torch.manual_seed(args.seed)
        began = time.process_time()
        estimate = word_log_probs(
            run.model, run.guide, words, estimator=name, num_samples=k, num_repeats=repeats
        )
        seconds = time.process_time() - began
        rows.append(
            {"spec": spec, **word_metrics(estimate, probs), "cpu_seconds": seconds, "words": len(words)}
        )
        r = rows[-1]
        print(f"  {spec}: CE {r['ce_nats']:.4f} ± {r['ce_stderr']:.4f}, {seconds:.1f} CPU s", flush=True)

    print()
    print("| estimator | K | runs | CE (nats/word) | standard error | CPU seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['estimator']} | {r['samples']} | {r['repeats']} | {r['ce_nats']:.4f} | {r['ce_stderr']:.4f} | "
              f"{r['cpu_seconds']:.1f} |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"run": str(args.run), "step": run.step, "scope": scope, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
