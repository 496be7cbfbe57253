"""Draw the learning curves that ``benchmarks/levers.py`` recorded: CE against steps and against training
CPU seconds, one panel pair per word list, one line per configuration.

    python benchmarks/plot_levers.py --out docs/img/levers_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "levers.jsonl"


def label(options: dict) -> str:
    """A short name of a configuration: the model, then what differs from the screen's defaults."""
    if options["model"] == "rnn":
        return "GRU, teacher forcing" + (", no bias init" if options["emitter_bias"] == "default" else "")
    parts = [
        options["objective"].upper() + (f" K={options['particles']}" if options["particles"] > 1 else "")
    ]
    parts += [f"free bits {options['free_bits']:g}"] if options["free_bits"] else []
    parts += [f"warm-up {options['kl_warmup']}"] if options["kl_warmup"] != 500 else []
    parts += ["no bias init"] if options["emitter_bias"] == "default" else []
    parts += [f"lr {options['lr']:g}"] if options["lr"] != 6e-3 else []
    return "DSSM, " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3000, help="only runs of this budget")
    args = parser.parse_args()
    records = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    records = [
        r for r in records
        if r["options"]["state_dim"] == args.state_dim and r["options"]["steps"] == args.steps
    ]  # fmt: skip
    sources = sorted({r["options"]["source"] for r in records}, key=lambda s: s != "symspell")
    labels = sorted({label(r["options"]) for r in records})
    colours = {name: f"C{i % 10}" for i, name in enumerate(labels)}  # one colour a configuration, every panel
    fig, axes = plt.subplots(len(sources), 2, figsize=(12, 4.5 * len(sources)), squeeze=False)
    for row, source in zip(axes, sources, strict=True):
        for r in (r for r in records if r["options"]["source"] == source):
            steps, cpu, ce = zip(*r["curve"], strict=True)
            style = "-" if r["options"]["model"] == "dssm" else "--"
            name = label(r["options"])
            row[0].plot(steps, ce, style, color=colours[name], marker="o", markersize=3, label=name)
            row[1].plot(cpu, ce, style, color=colours[name], marker="o", markersize=3, label=name)
        row[0].set(
            xlabel="step (batches of 256 words)", ylabel="CE (nats per word)", title=f"{source}: by step"
        )
        row[1].set(xlabel="training CPU seconds (1 thread)", ylabel="CE (nats per word)",
                   title=f"{source}: by CPU time")  # fmt: skip
        row[1].set_xscale("log")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
