"""Pyro's Deep Markov Model example trained on this machine, its validation and test NLL against epochs, beside
pyroseq's DMM preset at the same epochs: does the preset learn as the example does?

    python benchmarks/dmm_reference.py --dmm /path/to/pyro/examples/dmm.py \\
        --file ../shared/data/jsb_chorales.pickle --epochs 300 --run runs/study/jsb-dmm

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


def pyro_curve(dmm: Path, data: Path, epochs: int, work: Path) -> tuple[list[list[float]], float]:
    """``[[epoch, valid NLL, test NLL], ...]`` as Pyro's example logs them, and its wall seconds."""
    log = work / "dmm.log"
    command = [sys.executable, "-c", LAUNCHER, str(dmm), str(data), str(epochs + 1), str(log)]
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=work, env=ONE_THREAD)
    seconds = time.perf_counter() - began
    found = re.findall(r"\[val/test epoch (\d+)\]\s+([-0-9.]+)\s+([-0-9.]+)", log.read_text())
    return [[int(e), float(v), float(t)] for e, v, t in found], seconds


def pyroseq_curve(run: Path, epochs: list[int]) -> list[list[float]]:
    """``[[epoch, its epoch, valid NLL per frame], ...]``: a pyroseq run's validation nearest each epoch
    (within 10 epochs)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    valid = [(r["step"] / STEPS_PER_EPOCH, r["valid_loss"]) for r in records if "valid_loss" in r]
    if not valid:
        raise SystemExit(f"error: {run}/metrics.jsonl holds no validation")
    curve = []
    for epoch in epochs:
        at, loss = min(valid, key=lambda v: abs(v[0] - epoch))
        if abs(at - epoch) <= 10:
            curve.append([epoch, round(at, 1), loss])
    return curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dmm", type=Path, required=True, help="Pyro's examples/dmm.py")
    parser.add_argument("--file", type=Path, required=True, help="the JSB chorales pickle")
    parser.add_argument(
        "--epochs", type=int, default=300, help="epochs of Pyro's example (evaluated every 50)"
    )
    parser.add_argument("--run", type=Path, help="a pyroseq run directory of the dmm preset to set beside it")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dmm_reference.jsonl")
    args = parser.parse_args(argv)
    if args.epochs < 50:
        parser.error("--epochs must be at least 50: the example evaluates every 50 epochs")
    with tempfile.TemporaryDirectory() as work:
        curve, seconds = pyro_curve(args.dmm.resolve(), args.file.resolve(), args.epochs, Path(work))
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


if __name__ == "__main__":
    main()
