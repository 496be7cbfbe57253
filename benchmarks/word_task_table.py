"""Evaluate trained word-task runs side by side and print a Markdown table (and JSON).

For every run directory: the sequence cross-entropy CE = -sum_w p(w) log q(w) over the corpus's words,
KL = CE - H(p), the vocabulary mass sum_w q(w), and the training throughput read from the run's metrics
log. Autoregressive models are scored exactly; DSSMs with the shared prior-trajectory estimator and the
guide's IWAE estimator at each K of --samples.

    python benchmarks/word_task_table.py runs/rnn-teacher-d16 runs/dssm-iwae4-d16 --samples 100 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pyroseq.evaluate import evaluate_run
from pyroseq.runs.rundir import load_run


def training_rate(run_dir: Path) -> float | None:
    """Mean words per second over the run's logged steps (each run segment's own rate, last value)."""
    rates = [
        json.loads(line).get("words_per_s") for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    rates = [r for r in rates if r is not None]
    return rates[-1] if rates else None


def describe(run) -> str:
    c = run.config
    if c.model == "dssm":
        return f"DSSM ({c.flow} flow, {c.guide} guide, {c.objective} K={c.particles})"
    return f"{c.cell.upper()} {dict(teacher='teacher forcing', scheduled='scheduled sampling', professor='professor forcing')[c.training]}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--samples", nargs="+", type=int, default=[1000], help="K for the DSSM estimators")
    parser.add_argument("--estimators", nargs="+", default=["prior", "iwae"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()

    rows = []
    for run_dir in args.runs:
        run = load_run(run_dir)
        base = {"run": str(run_dir), "model": describe(run), "state_dim": run.config.state_dim, "steps": run.step,
                "batch_size": run.config.batch_size, "words_per_second": training_rate(run_dir)}  # fmt: skip
        settings = (
            [("exact", 0)]
            if run.model.autoregressive
            else [(e, k) for e in args.estimators for k in args.samples]
        )
        for estimator, k in settings:
            metrics = evaluate_run(
                run_dir, estimator=estimator, num_samples=k, bounds=False, noise=False, seed=args.seed
            )
            rows.append({**base, **{name: metrics[name] for name in metrics if name not in base}})
            r = rows[-1]
            print(f"{r['model']}, D={r['state_dim']}, {estimator} K={k}: CE {r['ce_nats']:.3f} ± {r['ce_stderr']:.3f}, "
                  f"KL {r['kl_nats']:.3f}, mass {r['vocab_mass']:.3f}, {r['cpu_seconds']:.1f} CPU s", flush=True)  # fmt: skip

    print()
    print("| model | D | estimator (K) | CE (nats/word) | KL (nats/word) | vocabulary mass | train words/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        est = "exact" if r["estimator"] == "exact" else f"{r['estimator']} ({r['samples']})"
        ce = f"{r['ce_nats']:.3f}" + ("" if r["estimator"] == "exact" else f" ± {r['ce_stderr']:.3f}")
        rate = "" if r["words_per_second"] is None else f"{r['words_per_second']:.0f}"
        print(
            f"| {r['model']} | {r['state_dim']} | {est} | {ce} | {r['kl_nats']:.3f} | {r['vocab_mass']:.3f} | {rate} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
