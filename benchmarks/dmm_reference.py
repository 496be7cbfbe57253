"""Pyro's Deep Markov Model example trained on this machine, its validation and test NLL against epochs, beside
pyroseq's DMM preset at the same epochs: does the preset learn as the example does?

    python benchmarks/dmm_reference.py --dmm /path/to/pyro/examples/dmm.py \\
        --file ../shared/data/jsb_chorales.pickle --epochs 300 --run runs/study/jsb-dmm
    # a long run: keep the example's log, and record the curve it holds so far if the run is cut off
    python benchmarks/dmm_reference.py --dmm ... --file ... --epochs 2000 --log runs/pyro-dmm/dmm.log
    python benchmarks/dmm_reference.py --from-log --log runs/pyro-dmm/dmm.log
    # redraw the figure from the last recorded line, with the runs' curves as they are now
    python benchmarks/dmm_reference.py --replot --plot docs/img/dmm_reference.png --also runs/study/other

Pyro's example is run as it is (its defaults: ClippedAdam at 3e-4, batches of 20, Trace_ELBO, KL annealing
from 0.2 over 1,000 epochs, no IAF), with the shims of ``benchmarks/dmm_speed.py`` (the chorales of
``--file`` in its loader's layout, a ``torchvision`` stub, its Pyro version check), on one thread. Every 50
epochs it prints the -ELBO per frame of the validation and test splits (one sample, annealing factor 1).
Its curve is appended to ``benchmarks/results/dmm_reference.jsonl``, with the validation -ELBO per frame of
the pyroseq run ``--run`` (``pyroseq train --preset dmm``, validated every ``--valid-every`` steps) at the
nearest validation to each of those epochs: both are one-sample -ELBO estimates over the whole validation
split, divided by its frames.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dmm_speed import BATCH, LAUNCHER, ONE_THREAD, TRAIN_CHORALES

STEPS_PER_EPOCH = -(-TRAIN_CHORALES // BATCH)  # 12: the example's batches per epoch, and the preset's


def pyro_curve(dmm: Path, data: Path, epochs: int, log: Path) -> tuple[list[list[float]], float]:
    """``[[epoch, valid NLL, test NLL], ...]`` as Pyro's example logs them (to ``log``), and its wall
    seconds."""
    command = [sys.executable, "-c", LAUNCHER, str(dmm), str(data), str(epochs + 1), str(log)]
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=log.parent, env=ONE_THREAD)
    return logged_curve(log), time.perf_counter() - began


def logged_curve(log: Path) -> list[list[float]]:
    """The ``[[epoch, valid NLL, test NLL], ...]`` that the example's log holds so far."""
    found = re.findall(r"\[val/test epoch (\d+)\]\s+([-0-9.]+)\s+([-0-9.]+)", log.read_text())
    return [[int(e), float(v), float(t)] for e, v, t in found]


def pyroseq_curve(run: Path, epochs: list[int]) -> list[list[float]]:
    """``[[epoch, its epoch, valid NLL per frame], ...]``: a pyroseq run's validation nearest each epoch
    (within 10 epochs)."""
    valid = validation_epochs(run)
    if not valid:
        raise SystemExit(f"error: {run}/metrics.jsonl holds no validation")
    curve = []
    for epoch in epochs:
        at, loss = min(valid, key=lambda v: abs(v[0] - epoch))
        if abs(at - epoch) <= 10:
            curve.append([epoch, round(at, 1), loss])
    return curve


def validation_epochs(run: Path) -> list[tuple[float, float]]:
    """``(epoch, valid NLL per frame)`` of each validation a pyroseq run logged."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"] / STEPS_PER_EPOCH, r["valid_loss"]) for r in records if "valid_loss" in r]


def plot(row: dict, runs: list[Path], out: Path) -> None:
    """Pyro's example's validation curve (every 50 epochs) and each pyroseq run's whole validation curve,
    against epochs; the dashed line is the example's published test figure after 5,000 epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    epochs, valid, _ = zip(*row["pyro"], strict=True)
    ax.plot(
        epochs, valid, "o-", color="black", label=f"Pyro's examples/dmm.py, run here ({row['epochs']} epochs)"
    )
    for run in runs:
        curve = validation_epochs(run)
        if curve:
            ax.plot(*zip(*curve, strict=True), label=f"pyroseq: {run.name}")
    ax.axhline(6.87, color="black", linestyle="--", linewidth=1, label="Pyro's DMM, published (5,000 epochs)")
    ax.set(xlabel="epochs (229 chorales)", ylabel="validation -ELBO per frame (nats)", ylim=(6.5, 12.5))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dmm", type=Path, help="Pyro's examples/dmm.py (not needed with --replot)")
    parser.add_argument("--file", type=Path, help="the JSB chorales pickle (not needed with --replot)")
    parser.add_argument(
        "--epochs", type=int, default=300, help="epochs of Pyro's example (evaluated every 50)"
    )
    parser.add_argument("--run", type=Path, help="a pyroseq run directory of the dmm preset to set beside it")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dmm_reference.jsonl")
    parser.add_argument(
        "--plot", type=Path, help="draw the curves (the example's and --run's, --also's) here"
    )
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="more pyroseq runs to draw")
    parser.add_argument(
        "--replot", action="store_true", help="train nothing: draw --plot from the last line of --out"
    )
    parser.add_argument(
        "--log",
        type=Path,
        help="keep the example's log here (default: a temporary folder), so that a long run's curve "
        "outlasts a cut-off; with --from-log, the log to read",
    )
    parser.add_argument(
        "--from-log",
        action="store_true",
        help="train nothing: record the curve that --log holds so far (a run cut off or still running)",
    )
    args = parser.parse_args(argv)
    if args.replot:
        if args.plot is None or not args.out.is_file():
            parser.error(
                "--replot draws --plot from the lines of --out: give --plot, and an --out that exists"
            )
        row = json.loads(args.out.read_text().splitlines()[-1])
        runs = [Path(row["run"])] if "run" in row and args.run is None else []
        plot(row, [*runs, *([args.run] if args.run else []), *args.also], args.plot)
        return
    if args.from_log:
        if args.log is None or not args.log.is_file():
            parser.error("--from-log records the curve of --log: give a --log that exists")
        curve = logged_curve(args.log)
        if not curve:
            parser.error(f"{args.log} holds no validation yet (the example evaluates every 50 epochs)")
        row = {"epochs": curve[-1][0], "pyro": curve, "pyro_seconds": None, "log": str(args.log)}
    else:
        if args.dmm is None or args.file is None:
            parser.error(
                "--dmm and --file are needed to train Pyro's example (or --replot to draw the last line)"
            )
        if args.epochs < 50:
            parser.error("--epochs must be at least 50: the example evaluates every 50 epochs")
        with tempfile.TemporaryDirectory() as work:
            log = Path(work) / "dmm.log" if args.log is None else args.log.resolve()
            log.parent.mkdir(parents=True, exist_ok=True)
            curve, seconds = pyro_curve(args.dmm.resolve(), args.file.resolve(), args.epochs, log)
        row = {"epochs": args.epochs, "pyro": curve, "pyro_seconds": seconds}
    if args.run is not None:
        row |= {"run": str(args.run), "pyroseq": pyroseq_curve(args.run, [e for e, _, _ in curve])}
    import torch

    row |= {"torch": torch.__version__, "recorded": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    ours = {epoch: loss for epoch, _, loss in row.get("pyroseq", [])}
    print("epoch  Pyro valid  Pyro test  pyroseq valid")
    for epoch, valid, test in curve:
        mine = ours.get(epoch)
        print(f"{epoch:5d}  {valid:10.3f}  {test:9.3f}  {'' if mine is None else f'{mine:13.3f}'}")
    if args.plot is not None:
        plot(row, [*([args.run] if args.run else []), *args.also], args.plot)


if __name__ == "__main__":
    main()
