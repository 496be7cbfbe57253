"""CPU seconds of one loss and backward pass per objective, on the default DSSM and FutureGuide (D = 16).

A batch of B random words of 3-8 letters (T <= 9 with EOS); each objective's best of ``--repeats`` passes
after one warm-up, in this process's CPU time on one thread (time.process_time), so other jobs on the
machine inflate it less than wall time.

    python benchmarks/objective_cost.py --batch 64 --particles 16
"""

from __future__ import annotations

import argparse
import json
import string
import time
from pathlib import Path

import torch

from pyroseq.data import Vocabulary, pad_batch
from pyroseq.guides import FutureGuide
from pyroseq.infer import FIVO, IWAE, DReG, FreeBitsELBO
from pyroseq.models import DSSM


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    letters = string.ascii_lowercase
    lengths = torch.randint(3, 9, (args.batch,), generator=generator)
    words = [
        "".join(letters[int(i)] for i in torch.randint(0, 26, (int(n),), generator=generator))
        for n in lengths
    ]
    vocab = Vocabulary(letters)
    batch = pad_batch([vocab.encode(w) for w in words])
    model, guide = DSSM(vocab_size=len(vocab)), FutureGuide(vocab_size=len(vocab))
    K = args.particles
    objectives = {
        f"IWAE K={K}": IWAE(num_particles=K),
        f"DReG K={K}": DReG(num_particles=K),
        f"FIVO N={K}": FIVO(num_particles=K),
        "FreeBitsELBO K=1": FreeBitsELBO(free_nats=1.0),
    }
    seconds = {}
    for name, objective in objectives.items():
        times = []
        for _ in range(args.repeats + 1):
            start = time.process_time()
            objective.differentiable_loss(model, guide, batch.ids, batch.mask).backward()
            times.append(time.process_time() - start)
        seconds[name] = min(times[1:])
        print(f"{name:18s} {seconds[name]:.3f} s")
    if args.out:
        args.out.write_text(
            json.dumps({"batch": args.batch, "T": batch.ids.shape[1], "seconds": seconds}, indent=1)
        )


if __name__ == "__main__":
    main()
