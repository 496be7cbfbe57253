"""Plot the validation loss of training runs against the step (one line per run directory).

On the word task the validation batch is drawn from p(w), so its loss estimates the cross-entropy: the exact
teacher-forced NLL per word for RNNs, the objective's bound (e.g. -IWAE_K, an upper bound on the NLL) for
a DSSM.

    python benchmarks/plot_curves.py runs/rnn-teacher-d16 runs/dssm-iwae4-d16 --out docs/img/curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--floor", type=float, help="draw H(p) as a horizontal line")
    parser.add_argument("--title", default="validation loss (nats per word)")
    parser.add_argument("--ylim", type=float, nargs=2, metavar=("LOW", "HIGH"), help="the loss axis's range")
    args = parser.parse_args()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in args.runs:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        points = [(r["step"], r["valid_loss"]) for r in records if "valid_loss" in r]
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, label=run.name)
    if args.floor is not None:
        ax.axhline(args.floor, color="black", linestyle="--", linewidth=1, label="H(p)")
    if args.ylim:
        ax.set_ylim(*args.ylim)
    ax.set_xlabel("step")
    ax.set_ylabel("nats per word")
    ax.set_title(args.title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(args.out)


if __name__ == "__main__":
    main()
