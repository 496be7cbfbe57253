"""Per-epoch training time of Pyro's Deep Markov Model example against pyroseq's DMM preset, side by side.

    # a copy of Pyro's example (the repository is public: github.com/pyro-ppl/pyro, examples/dmm.py)
    python benchmarks/dmm_speed.py --dmm /path/to/pyro/examples/dmm.py \\
        --file ../shared/data/jsb_chorales.pickle --epochs 4 --rounds 2

Each round runs Pyro's example (its defaults: Trace_ELBO, batches of 20, no IAF) and then
``pyroseq train --preset dmm`` for the same number of epochs of the 229 training chorales, one CPU thread
each, one after the other (never beside each other or another job). An epoch's time leaves out the first
epoch (start-up, first allocations): for Pyro the ``dt`` its log prints per epoch, for pyroseq the time
between the end of the first epoch's worth of steps and the last step, from the trainer's cumulative rate
in ``metrics.jsonl``, per 229 chorales. The figures and their ratio are appended to
``benchmarks/results/dmm_speed.jsonl``.

Pyro's example is run as it is, with two shims applied in the process that runs it: its data loader's
``load_data`` returns the chorales of ``--file`` in the loader's own layout (the example would download
the same file), and ``torchvision`` (which ``pyro.contrib.examples.util`` imports, unused here) is a stub
when it is not installed. The example asserts the Pyro release it was written for; the installed
release's version string is shown to it as that one's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_CHORALES = 229  # the JSB training split (Boulanger-Lewandowski et al. 2012)
BATCH = 20  # the example's mini-batch, and the preset's
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}

# Runs in the child process: argv = [dmm.py, pickle, epochs, log].
LAUNCHER = r"""
import re, runpy, sys, types
import torch
torch.set_num_threads(1)
def _empty_class(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (), {})
try:
    import torchvision  # noqa: F401
except ImportError:  # pyro.contrib.examples.util imports it at module level; the DMM never uses it
    tv = types.ModuleType("torchvision")
    tv.datasets, tv.transforms = types.ModuleType("datasets"), types.ModuleType("transforms")
    for stub in (tv.datasets, tv.transforms):  # names it subclasses or reads: empty classes
        stub.__getattr__ = _empty_class
    sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets,
                        "torchvision.transforms": tv.transforms})
import pyro
import pyro.contrib.examples.polyphonic_data_loader as poly
from torch.nn.utils.rnn import pad_sequence
from pyroseq.data.polyphonic import load_polyphonic

dmm, pickle_path, epochs, log = sys.argv[1:5]
corpus = load_polyphonic(pickle_path)

def load_data(dataset):  # the loader's layout: padded (N, T_max, 88) float rolls and their lengths
    return {name: {"sequences": pad_sequence(split.rolls, batch_first=True).float(),
                   "sequence_lengths": split.lengths.long()}
            for name, split in (("train", corpus.train), ("valid", corpus.valid), ("test", corpus.test))}

poly.load_data = load_data
wanted = re.search(r'__version__\.startswith\("([^"]+)"\)', open(dmm).read())
if wanted:
    pyro.__version__ = wanted.group(1)
sys.argv = [dmm, "-n", epochs, "-l", log]
runpy.run_path(dmm, run_name="__main__")
"""


def pyro_epochs(dmm: Path, data: Path, epochs: int, work: Path) -> list[float]:
    """Seconds of each epoch of Pyro's example, as its log reports them."""
    log = work / "dmm.log"
    command = [sys.executable, "-c", LAUNCHER, str(dmm), str(data), str(epochs), str(log)]
    subprocess.run(command, check=True, cwd=work, env=ONE_THREAD)
    return [float(x) for x in re.findall(r"dt = ([0-9.]+) sec", log.read_text())]


def pyroseq_epochs(data: Path, epochs: int, work: Path) -> tuple[float, float]:
    """Seconds per epoch of ``pyroseq train --preset dmm`` after its first epoch, and the whole command's."""
    out = work / "run"
    steps = epochs * -(-TRAIN_CHORALES // BATCH)  # the example's batches per epoch, 12
    command = [sys.executable, "-m", "pyroseq", "train", "--preset", "dmm", "--file", str(data),
               "--steps", str(steps), "--threads", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=ONE_THREAD)
    whole = time.perf_counter() - began
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    at = {r["step"]: r["step"] * BATCH / r["seq_per_s"] for r in records}  # seconds since training began
    first = steps // epochs
    per_chorale = (at[steps] - at[first]) / ((steps - first) * BATCH)
    return per_chorale * TRAIN_CHORALES, whole


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dmm", type=Path, required=True, help="Pyro's examples/dmm.py")
    parser.add_argument("--file", type=Path, required=True, help="the JSB chorales pickle")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per program and round (at least 2)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dmm_speed.jsonl")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is left out")
    pyro_times, ours = [], []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            pyro_times += pyro_epochs(args.dmm.resolve(), args.file.resolve(), args.epochs, Path(a))[1:]
            ours.append(pyroseq_epochs(args.file.resolve(), args.epochs, Path(b))[0])
        print(f"round {round_ + 1}: Pyro {pyro_times[-args.epochs + 1 :]}, pyroseq {ours[-1]:.2f} s/epoch")
    import torch

    row = {
        "pyro_s_per_epoch": statistics.median(pyro_times),
        "pyroseq_s_per_epoch": statistics.median(ours),
        "pyro_epochs": pyro_times,
        "pyroseq_rounds": ours,
        "ratio": statistics.median(ours) / statistics.median(pyro_times),
        "epochs": args.epochs,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "recorded": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"median s/epoch: Pyro {row['pyro_s_per_epoch']:.2f}, pyroseq {row['pyroseq_s_per_epoch']:.2f}; "
          f"pyroseq / Pyro = {row['ratio']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
