"""Is the DSSM's guide what holds it back? Hold a trained model fixed and improve its guide (issue 27).

    python benchmarks/guide_refit.py runs/quickstart --steps 1500 --lr 0.003 \\
        --json benchmarks/results/guide_refit.jsonl
    python benchmarks/guide_refit.py runs/quickstart --local 400 --lr 0.002 \\
        --json benchmarks/results/guide_refit.jsonl

**A lagging guide** (He et al., ICLR 2019, "Lagging inference networks"): if the guide trailed its model,
training its networks alone against the fixed model (the run's objective and particles, Adam at ``--lr``, no
warm-up) would tighten the bounds and lower the CE estimate, which is a guide IWAE. Every ``--every`` steps
this prints, and the JSON line keeps, the CE (the guide's IWAE with ``--eval-k`` particles per vocabulary
word) and the -ELBO and -IWAE bounds per word on ``--held`` batches drawn from p(w) that the guide is never
trained on.

**The amortisation gap** (Cremer, Li & Duvenaud, ICML 2018; what semi-amortised inference, Kim et al.
2018, would close), with ``--local ITERS``: each word of the held batches gets free offsets to the guide's
future summary ``b_t`` (local variational parameters, ``(B, T, H)``), fitted for ``ITERS`` Adam steps at
``--lr`` on the run's bound (IWAE's gradient for a DReG run), the model and the guide's networks fixed; the
bounds on those words are measured with the offsets as they go.

Flat curves in both say that the inference gap left is the guide family's, not a lag or the amortisation.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch
from torch import Tensor

from pyroseq.evaluate.bounds import elbo_and_iwae
from pyroseq.evaluate.words import word_log_probs, word_metrics
from pyroseq.infer import Trainer
from pyroseq.infer.objectives import make_objective
from pyroseq.runs import load_run


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a trained DSSM's run directory")
    p.add_argument("--steps", type=int, default=1500, help="steps of the guide's networks alone")
    p.add_argument("--local", type=int, metavar="ITERS", help="fit per-word offsets instead (see above)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--eval-k", type=int, default=100, help="guide IWAE particles per word for the CE")
    p.add_argument("--held", type=int, default=4, help="held-out batches for the bounds")
    p.add_argument("--bound-k", type=int, nargs="+", default=[1, 8, 64], help="the bounds' particle counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="append the record to this JSON-lines file")
    return p.parse_args()


def held_bounds(model, guide, batch, ks: list[int]) -> dict[str, float]:
    """``-ELBO`` and ``-IWAE_K`` in nats per word on one batch of words."""
    with torch.no_grad():
        bounds = elbo_and_iwae(model, guide, batch.observations, batch.mask, ks=ks)
    return {("elbo" if k == 1 else f"iwae_{k}"): -bounds["elbo" if k == 1 else f"iwae_{k}"] for k in ks}


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(sum(row[name] for row in rows) / len(rows), 4) for name in rows[0]}


@contextmanager
def summary_offset(guide, offset: Tensor) -> Iterator[None]:
    """The guide's future summary plus ``offset`` for the duration (an instance attribute over the method)."""
    summary = type(guide).future_summary
    guide.future_summary = lambda ids, mask: summary(guide, ids, mask) + offset
    try:
        yield
    finally:
        del guide.future_summary


def refit(args, run, corpus, model, guide, batches, held) -> list[dict]:
    """Train the guide's networks alone against the fixed model; the CE and the bounds as it goes."""
    words = corpus.encode()

    def measure(step: int, cpu: float) -> dict:
        with torch.no_grad():
            ce = word_metrics(word_log_probs(model, guide, words, num_samples=args.eval_k), corpus.probs)
        bounds = mean_rows([held_bounds(model, guide, batch, args.bound_k) for batch in held])
        row = {"step": step, "cpu_s": round(cpu, 1), "ce": round(ce["ce_nats"], 4), **bounds}
        print(json.dumps(row), flush=True)
        return row

    curve = [measure(0, 0.0)]
    trainer = Trainer(model, guide, objective=run.config.objective, particles=run.config.particles,
                      lr=args.lr, lr_decay=1.0, total_steps=args.steps, kl_warmup=0)  # fmt: skip
    cpu = 0.0
    for step in range(1, args.steps + 1):
        began = time.process_time()
        trainer.step(next(batches))
        cpu += time.process_time() - began
        if step % args.every == 0 or step == args.steps:
            curve.append(measure(step, cpu))
    return curve


def refine_locally(args, run, model, guide, held) -> list[dict]:
    """Fit free per-word offsets to the guide's future summary on the held batches, the networks fixed."""
    for p in guide.parameters():
        p.requires_grad_(False)
    offsets = [torch.zeros((*batch.mask.shape, guide.rnn_hidden), requires_grad=True) for batch in held]
    # DReG's estimator is for parameters its guide's param sites name: the offsets are not among them, so they
    # get IWAE's own gradient (the bound DReG's value is) with the run's particles.
    objective = "iwae" if run.config.objective == "dreg" else run.config.objective
    loss = make_objective(objective, particles=run.config.particles).differentiable_loss

    def measure(step: int, cpu: float) -> dict:
        rows = []
        for batch, offset in zip(held, offsets, strict=True):
            with summary_offset(guide, offset.detach()):
                rows.append(held_bounds(model, guide, batch, args.bound_k))
        row = {"step": step, "cpu_s": round(cpu, 1), **mean_rows(rows)}
        print(json.dumps(row), flush=True)
        return row

    optimizer = torch.optim.Adam(offsets, lr=args.lr)
    curve, cpu = [measure(0, 0.0)], 0.0
    for step in range(1, args.local + 1):
        began = time.process_time()
        optimizer.zero_grad()
        for batch, offset in zip(held, offsets, strict=True):
            with summary_offset(guide, offset):
                loss(model, guide, batch.observations, batch.mask).backward()
        optimizer.step()
        cpu += time.process_time() - began
        if step % args.every == 0 or step == args.local:
            curve.append(measure(step, cpu))
    return curve


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    pyro.set_rng_seed(args.seed)
    run = load_run(args.run)
    if run.config.model != "dssm":
        raise SystemExit(f"{args.run} is a {run.config.model} run: only a DSSM has a guide to refit")
    model, guide = run.model, run.guide
    model.train()
    guide.train()
    for p in model.parameters():
        p.requires_grad_(False)  # the model is held fixed: pyro.module skips it (and says so; silenced)
    warnings.filterwarnings("ignore", message=".*not registered in the param store because requires_grad")
    corpus = run.corpus()
    batches = corpus.sampler(run.config.batch_size, seed=args.seed + 1)
    held = [next(batches) for _ in range(args.held)]
    if args.local:
        curve = refine_locally(args, run, model, guide, held)
    else:
        curve = refit(args, run, corpus, model, guide, batches, held)
    record = {"run": str(args.run), "run_step": run.step, "objective": run.config.objective,
              "particles": run.config.particles, "options": {k: str(v) if isinstance(v, Path) else v
                                                              for k, v in vars(args).items()},
              "curve": curve, "torch": torch.__version__}  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
