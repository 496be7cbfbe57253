"""Training throughput (words per second), measured side by side in one run.

For each configuration (threads, batch size B, state size D, particles K) it times, in interleaved
rounds on the same batches (top-N words drawn from p(w)):

* ``dssm``: pyroseq's DSSM and future guide, one ``Trainer.step`` (ELBO for K=1, IWAE or ``--objective dreg`` for K>1);
* ``reference``: the same model, parameters and objective in plain PyTorch
  (``benchmarks/reference_dssm.py``), with the same gradient clipping and Adam step;
* ``gru``: pyroseq's teacher-forced GRU of state size D (and any other ``--training`` modes);

and reports the two ratios that say where the time goes: ``dssm / reference`` step time (Pyro's overhead)
and ``dssm / gru`` words per second. Beside them it counts each candidate's arithmetic, the matmul-like
floating-point operations of one training step (forward and backward, ``torch.utils.flop_counter``) per
word, so that ``dssm / gru`` words/s can be read against ``gru / dssm`` FLOPs per word: a ratio of words/s
above the ratio of work means the DSSM runs more FLOPs per second than the GRU. Each candidate's figure is the median over ``--rounds`` rounds of
``--steps`` steps. Prints one line (or, with ``--jsonl``, one JSON object) per configuration, writes
JSON with ``--out`` and a plot with ``--plot``. Run from the repository root with pyroseq importable
(``pip install -e .``, or ``PYTHONPATH=.``):

    python benchmarks/train_throughput.py --batch-size 256 --state-dim 16 --particles 1 4 16 \\
        --out benchmarks/results/train_cpu.json --plot docs/img/throughput_cpu.png
    python benchmarks/train_throughput.py --device cuda --batch-size 64 256 1024 --particles 1 4 16 \\
        --state-dim 8 16 32 --jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch

from pyroseq.data.batch import Batch
from pyroseq.data.words import load_words
from pyroseq.infer.trainer import Trainer
from pyroseq.runs.config import RunConfig, resolve_device
from pyroseq.runs.specs import build_from_specs, guide_spec, model_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_dssm  # noqa: E402

Step = Callable[[Batch], object]


def _modules(config: RunConfig, corpus, device: torch.device):
    torch.manual_seed(config.seed)
    return build_from_specs(model_spec(config, corpus.vocab), guide_spec(config, corpus.vocab), device=device)


def pyroseq_step(config: RunConfig, corpus, device: torch.device) -> Step:
    """One pyroseq training step (the ``Trainer``'s: objective, clipping, Adam)."""
    model, guide = _modules(config, corpus, device)
    trainer = Trainer(model, guide, objective=config.objective, particles=config.particles, jit=config.jit)
    return trainer.step


def reference_step(config: RunConfig, corpus, device: torch.device) -> Step:
    """The same step in plain PyTorch: reference loss, gradients per sequence, clipping, Adam."""
    model, guide = _modules(config, corpus, device)
    params = [*model.parameters(), *guide.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    K = config.particles

    def step(batch: Batch) -> float:
        optimizer.zero_grad(set_to_none=True)
        if K > 1:
            loss = reference_dssm.iwae_loss(model, guide, batch.ids, batch.mask, particles=K)
        else:
            loss = reference_dssm.elbo_loss(model, guide, batch.ids, batch.mask)
        (loss / len(batch)).backward()
        torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
        optimizer.step()
        return float(loss.detach())

    return step


def measure(steps: dict[str, Step], batches: dict[str, object], *, rounds: int, n: int, warmup: int, device):
    """Median words/s of each candidate over ``rounds`` interleaved rounds of ``n`` steps."""

    # Pyro keys module parameters by name ("model.*", "guide.*"): each candidate gets its own store.
    stores: dict[str, dict] = {name: {"params": {}, "constraints": {}} for name in steps}

    def timed(name: str, count: int) -> float:
        with pyro.get_param_store().scope(stores[name]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            words = 0
            for _ in range(count):
                batch = next(batches[name])
                steps[name](batch)
                words += len(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return words / (time.perf_counter() - began)

    for name in steps:
        timed(name, warmup)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name in steps:
            rates[name].append(timed(name, n))
    return {name: statistics.median(r) for name, r in rates.items()}


def flops_per_word(steps: dict[str, Step], batches: dict[str, object]) -> dict[str, float]:
    """Matmul-like FLOPs of one training step of each candidate (forward and backward), per word."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    for name, step in steps.items():
        with pyro.get_param_store().scope(), FlopCounterMode(display=False) as counter:
            batch = next(batches[name])
            step(batch)
        counts[name] = counter.get_total_flops() / len(batch)
    return counts


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"B={r['batch_size']} D={r['state_dim']} K={r['particles']}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.6), sharey=True)
    y = range(len(rows))
    axes[0].barh(y, [r["dssm_time_over_reference"] for r in rows], color="tab:blue")
    axes[0].axvline(1.2, color="k", ls="--", lw=1, label="target 1.2")
    axes[0].set_xlabel("DSSM step time / plain-PyTorch reference")
    axes[1].barh(y, [r["dssm_words_over_gru"] for r in rows], color="tab:orange")
    for target, style in ((0.5, ":"), (0.25, "--")):
        axes[1].axvline(
            target, color="k", ls=style, lw=1, label=f"target {target} (K={1 if target == 0.5 else 4})"
        )
    axes[1].set_xlabel("DSSM words/s / teacher-forced GRU words/s")
    axes[0].set_yticks(list(y), labels)
    for ax in axes:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", nargs="+", type=int, default=[256])
    parser.add_argument("--state-dim", nargs="+", type=int, default=[16])
    parser.add_argument("--particles", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument(
        "--flow",
        default="triangular",
        help="the DSSM's transition flow (default triangular, as in docs/benchmarks.md; the library's "
        "default is coupling+coupling)",
    )
    parser.add_argument(
        "--objective",
        choices=("iwae", "dreg"),
        default="iwae",
        help="the DSSM's objective for K > 1 (the library's default is dreg; the plain-PyTorch reference "
        "implements iwae, so dreg needs --no-reference)",
    )
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument(
        "--training", nargs="+", default=["teacher"], help="GRU modes: teacher, scheduled, professor"
    )
    parser.add_argument("--jit", action="store_true", help="also time JitTrace_ELBO (K=1: DSSM and GRU)")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain-PyTorch reference")
    parser.add_argument("--top", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jsonl", action="store_true", help="print one JSON object per configuration")
    parser.add_argument("--out", type=Path, help="write all rows as JSON here")
    parser.add_argument("--plot", type=Path, help="write a plot of the two ratios here (PNG)")
    args = parser.parse_args()
    if args.objective == "dreg" and not args.no_reference and max(args.particles) > 1:
        parser.error("--objective dreg has no plain-PyTorch reference: add --no-reference")

    device = resolve_device(args.device)
    corpus = load_words("symspell", top=args.top)
    rows = []
    for threads, B, D in itertools.product(args.threads, args.batch_size, args.state_dim):
        torch.set_num_threads(threads)
        for K in args.particles:
            base = {"state_dim": D, "batch_size": B, "device": args.device}
            objective = args.objective if K > 1 else "elbo"
            dssm = RunConfig(model="dssm", flow=args.flow, particles=K, objective=objective, **base)
            steps = {"dssm": pyroseq_step(dssm, corpus, device)}
            if not args.no_reference:
                steps["reference"] = reference_step(dssm, corpus, device)
            if args.jit and K == 1:
                jit = RunConfig(model="dssm", flow=args.flow, objective="elbo", jit=True, **base)
                steps["dssm_jit"] = pyroseq_step(jit, corpus, device)
            for training in args.training:
                steps[f"gru_{training}"] = pyroseq_step(
                    RunConfig(model="rnn", training=training, **base), corpus, device
                )
                if args.jit and training == "teacher":
                    steps["gru_teacher_jit"] = pyroseq_step(
                        RunConfig(model="rnn", training="teacher", jit=True, **base), corpus, device
                    )
            batches = {name: corpus.sampler(B, seed=0, device=device) for name in steps}
            rates = measure(
                steps, batches, rounds=args.rounds, n=args.steps, warmup=args.warmup, device=device
            )
            flops = flops_per_word(steps, batches)
            row = {
                "threads": threads,
                "batch_size": B,
                "state_dim": D,
                "particles": K,
                "objective": dssm.objective,
                "words_per_second": {name: round(rate, 1) for name, rate in rates.items()},
                "flops_per_word": {name: round(f) for name, f in flops.items()},
                "gru_flops_over_dssm": round(flops["gru_teacher"] / flops["dssm"], 4)
                if "gru_teacher" in flops
                else None,
                "dssm_words_over_gru": round(rates["dssm"] / rates["gru_teacher"], 4)
                if "gru_teacher" in rates
                else None,
                "dssm_time_over_reference": round(rates["reference"] / rates["dssm"], 4)
                if "reference" in rates
                else None,
            }
            rows.append(row)
            if args.jsonl:
                print(json.dumps(row), flush=True)
            else:
                figures = "  ".join(f"{name} {rate:9.1f}" for name, rate in rates.items())
                print(
                    f"threads={threads} B={B:5d} D={D:3d} K={K:3d}  words/s: {figures}  "
                    f"dssm/ref time {row['dssm_time_over_reference']}  "
                    f"dssm/gru words {row['dssm_words_over_gru']}  "
                    f"gru/dssm FLOPs per word {row['gru_flops_over_dssm']}",
                    flush=True,
                )
    result = {
        "device": args.device if device.type != "cuda" else torch.cuda.get_device_name(device),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot and rows and not args.no_reference and "teacher" in args.training:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
