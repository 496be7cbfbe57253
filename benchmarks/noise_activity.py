"""Which noise dimensions trained DSSMs use: active units per noise dimension (Burda et al. 2016), one JSON
line and one figure panel per run (issue 27: is D = 32 worse than D = 16 because noise directions go unused?).

    python benchmarks/noise_activity.py runs/study/dssm-default-d16 runs/study/dssm-default-d32 \\
        --out docs/img/noise_activity.png --json benchmarks/results/noise_activity.jsonl

Each run (a run directory, or a snapshot directory holding config.json and checkpoint.pt) is measured by
:func:`pyroseq.evaluate.noise_activity` on ``--words`` words drawn from p(w) with ``--seed`` (the words
``pyroseq evaluate --activity`` draws with the same seed), ``--samples`` guide draws per word. The panels
show each dimension's activity (averaged over steps, weighted by the words still running), sorted, on a
log scale with Burda's threshold 0.01; values at or below the axis floor are drawn at the floor.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import matplotlib
import torch

from pyroseq.data.words import WordCorpus
from pyroseq.evaluate import noise_activity
from pyroseq.runs import load_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLOOR = 1e-4  # the lowest activity the panels show (an inactive dimension's estimate is about 0, or below)


def run_name(path: Path) -> str:
    """``NAME`` of a run directory, ``NAME/step-XXXXXX`` of a study snapshot."""
    path = path.parent if path.name == "checkpoint.pt" else path
    return f"{path.parent.name}/{path.name}" if path.name.startswith("step-") else path.name


def measure(path: Path, *, words: int, samples: int, seed: int, device: str) -> dict:
    """The activity of one run's noise dimensions, as the JSON line written for it."""
    run = load_run(path, device=device)
    corpus = run.corpus()
    if run.model.autoregressive or not isinstance(corpus, WordCorpus):
        raise SystemExit(f"{path}: a DSSM trained on the word task is needed, got {run.config.model}")
    torch.manual_seed(seed)
    batch = corpus.draw_batch(words, seed=seed, device=device)
    began = time.process_time()
    activity = noise_activity(run.model, run.guide, batch.ids, batch.mask, num_samples=samples)
    return {
        "run": str(path),
        "name": run_name(path),
        "model": run.config.model,
        "step": run.step,
        "seed": seed,
        "cpu_seconds": time.process_time() - began,
        "machine": f"{platform.machine()} CPU, {device}",
        **activity.to_dict(),
    }


def draw(records: list[dict], out: Path) -> None:
    """One panel per run: the activity of each dimension, sorted, log scale, the threshold as a line."""
    fig, axes = plt.subplots(1, len(records), figsize=(max(6.0, 4.5 * len(records)), 4.5), squeeze=False)
    for ax, record in zip(axes[0], records, strict=True):
        values = sorted(record["dimension_activity"], reverse=True)
        ranks = range(1, len(values) + 1)
        ax.plot(ranks, [max(v, FLOOR) for v in values], "o-", color="C0", markersize=4)
        ax.axhline(
            record["threshold"], color="C3", linestyle="--", label=f"threshold {record['threshold']:g}"
        )
        ax.set_yscale("log")
        ax.set_ylim(FLOOR * 0.5, max(2.0, 2 * max(values)))
        ax.set_xlabel("noise dimension (sorted by activity)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(
            f"{record['name']} (step {record['step']})\n"
            f"{record['num_active']} of {record['state_dim']} active"
        )
        ax.legend(loc="upper right")
    axes[0][0].set_ylabel(r"activity $\mathrm{Var}_w\, E_q[\xi_{t,d}]$, mean over t")
    words, samples = records[0]["num_sequences"], records[0]["num_samples"]
    fig.suptitle(f"active noise dimensions\n{words} words from p(w), K = {samples} guide draws each")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def draw_by_step(records: list[dict], out: Path) -> None:
    """Active dimensions (and summed activity) against the training step, one line per run, its snapshots
    (``NAME/step-XXXXXX``) and the run itself (``NAME``) joined in order of step."""
    runs: dict[str, list[dict]] = {}
    for record in records:
        runs.setdefault(record["name"].split("/")[0], []).append(record)
    fig, (count, total) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in runs.items():
        points = sorted(points, key=lambda r: r["step"])
        steps = [r["step"] for r in points]
        label = f"{name} (D = {points[0]['state_dim']})"
        count.plot(steps, [r["num_active"] for r in points], "o-", label=label)
        total.plot(
            steps, [sum(v for v in r["dimension_activity"] if v == v) for r in points], "o-", label=label
        )
    count.set_ylabel(f"active dimensions (activity > {records[0]['threshold']:g})")
    total.set_ylabel("summed activity over dimensions")
    for ax in (count, total):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    count.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def recorded(path: Path, names: list[str]) -> list[dict]:
    """The latest line of ``path`` for each run ``NAME`` in ``names`` and each of its snapshots."""
    if not names:
        return []
    latest: dict[str, dict] = {}
    lines = path.read_text().splitlines() if path.is_file() else []
    for record in (json.loads(line) for line in lines if line.strip()):
        if record.get("name", "").split("/")[0] in names:
            latest[record["name"]] = record
    missing = sorted(set(names) - {name.split("/")[0] for name in latest})
    if missing:
        raise SystemExit(f"error: {path} has no line of {', '.join(missing)}")
    return list(latest.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run or snapshot directories")
    parser.add_argument(
        "--out", type=Path, required=True, help="the figure (PNG): a panel per run (snapshots only if no run)"
    )
    parser.add_argument(
        "--json", type=Path, required=True, help="the results file; one line per run is appended"
    )
    parser.add_argument("--words", type=int, default=1000, help="words drawn from p(w)")
    parser.add_argument("--samples", type=int, default=16, help="K guide draws per word")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--by-step", type=Path, help="also draw active dimensions against the training step here (PNG)"
    )
    parser.add_argument(
        "--recorded",
        nargs="*",
        default=[],
        metavar="NAME",
        help="runs measured before: draw their lines of --json (the run and its snapshots, the latest line of "
        "each) beside the new ones, without measuring them again",
    )
    args = parser.parse_args()
    records = recorded(args.json, args.recorded)
    for path in args.runs:
        record = measure(path, words=args.words, samples=args.samples, seed=args.seed, device=args.device)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as f:
            f.write(json.dumps(record) + "\n")
        records.append(record)
        summary = " ".join(f"{v:.3f}" for v in sorted(record["dimension_activity"], reverse=True))
        print(f"{record['name']} (step {record['step']}): {record['num_active']} of {record['state_dim']} "
              f"active; sorted activity {summary}")  # fmt: skip
    finals = [r for r in records if "/" not in r["name"]]  # the runs themselves, not their snapshots
    draw(finals or records, args.out)
    print(f"figure: {args.out}")
    if args.by_step:
        draw_by_step(records, args.by_step)
        print(f"figure: {args.by_step}")


if __name__ == "__main__":
    main()
