"""Training throughput (words per second) of pyroseq models, run side by side on one machine.

Each configuration trains a fresh model for a few warm-up steps, then times ``--steps`` SVI steps on
batches drawn from p(w) of the top-N words. Prints a table and writes JSON.

    python benchmarks/train_throughput.py --out benchmarks/results/train_cpu.json
    python benchmarks/train_throughput.py --device cuda --batch-size 256 1024 --particles 1 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import torch

from pyroseq.data.words import load_words
from pyroseq.infer.config import RunConfig, resolve_device
from pyroseq.infer.specs import build_from_specs, guide_spec, model_spec
from pyroseq.infer.trainer import Trainer


def measure(config: RunConfig, corpus, *, steps: int, warmup: int) -> float:
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model, guide = build_from_specs(
        model_spec(config, corpus.vocab), guide_spec(config, corpus.vocab), device=device
    )
    trainer = Trainer(model, guide, objective=config.objective, particles=config.particles, jit=config.jit)
    batches = corpus.sampler(config.batch_size, seed=config.seed, device=device)
    for _ in range(warmup):
        trainer.step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(steps):
        trainer.step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["dssm"], help="dssm, rnn")
    parser.add_argument(
        "--training", nargs="+", default=["teacher"], help="rnn: teacher, scheduled, professor"
    )
    parser.add_argument("--batch-size", nargs="+", type=int, default=[256])
    parser.add_argument("--state-dim", nargs="+", type=int, default=[16])
    parser.add_argument("--particles", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()])
    parser.add_argument("--jit", action="store_true", help="also time JitTrace_ELBO (K=1 ELBO only)")
    parser.add_argument("--top", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    corpus = load_words("symspell", top=args.top)
    rows = []
    grid = itertools.product(
        args.models, args.training, args.threads, args.batch_size, args.state_dim, args.particles
    )
    for model, training, threads, B, D, K in grid:
        if model == "dssm" and training != args.training[0]:
            continue
        torch.set_num_threads(threads)
        objectives = [("iwae" if K > 1 else "elbo", False)]
        if args.jit and K == 1 and (model == "dssm" or training == "teacher"):
            objectives.append(("elbo", True))
        for objective, jit in objectives:
            if model == "rnn" and K > 1:
                continue
            config = RunConfig(model=model, training=training, state_dim=D, batch_size=B, particles=K,
                               objective=objective, jit=jit, device=args.device)  # fmt: skip
            rate = measure(config, corpus, steps=args.steps, warmup=args.warmup)
            name = model if model == "dssm" else f"rnn-{training}"
            row = {"model": name, "threads": threads, "batch_size": B, "state_dim": D, "particles": K,
                   "objective": objective, "jit": jit, "words_per_second": round(rate, 1)}  # fmt: skip
            rows.append(row)
            print(f"{name:14s} threads={threads} B={B:5d} D={D:3d} K={K:3d} {objective}{'+jit' if jit else '':4s}"
                  f"  {rate:10.1f} words/s", flush=True)  # fmt: skip
    result = {
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "steps": args.steps,
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
