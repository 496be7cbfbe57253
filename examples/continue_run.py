"""Load a ``pyroseq train`` run in a script, train it on with plain Pyro SVI, and write it back.

``load_run`` rebuilds the run's model and guide (ordinary Pyro model and guide, with names of their own
in Pyro's param store, so they train alongside any other model in the process). ``save_run`` writes them
as a new run directory, which ``pyroseq evaluate``, ``sample`` and ``check`` accept like any other.

    pyroseq train --source sample --steps 200 --out runs/base
    python examples/continue_run.py --run runs/base --steps 300 --out runs/continued
    pyroseq evaluate runs/continued

    python examples/continue_run.py --smoke        # seconds: trains a tiny run first, in a temporary dir
"""

import argparse
import tempfile
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyroseq.runs import RunConfig, load_run, save_run, train_run


def main(argv: list[str] | None = None) -> Path:
    """Continue the run; return the new run directory."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a run directory written by pyroseq train")
    parser.add_argument("--out", type=Path, help="the new run directory (default: RUN-continued)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="train a tiny run first, then 3 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="pyroseq-continue-"))
        config = RunConfig(source="sample", state_dim=2, flow_hidden=4, emitter_hidden=4, guide_hidden=4,
                           embed_dim=4, batch_size=4, steps=2, valid_size=4)  # fmt: skip
        train_run(config, tmp / "base", progress=False)
        args.run, args.out, args.steps, args.batch_size = tmp / "base", tmp / "continued", 3, 4
    if args.run is None:
        parser.error("--run is required (or --smoke)")
    out = args.out or args.run.with_name(args.run.name + "-continued")

    run = load_run(args.run)
    corpus = run.corpus()
    model, guide = run.model, run.guide
    model.train()
    if isinstance(guide, torch.nn.Module):
        guide.train()
    print(f"loaded {run.path}: a {type(model).__name__} trained {run.step} steps")

    pyro.set_rng_seed(args.seed)
    svi = SVI(model, guide, ClippedAdam({"lr": args.lr, "clip_norm": 10.0}), Trace_ELBO(max_plate_nesting=1))
    valid = corpus.draw_batch(min(512, 8 * args.batch_size), seed=args.seed + 1)
    before = svi.evaluate_loss(valid.ids, valid.mask) / len(valid)
    batches = corpus.sampler(args.batch_size, seed=args.seed)
    for _ in range(args.steps):
        batch = next(batches)
        svi.step(batch.ids, batch.mask)
    after = svi.evaluate_loss(valid.ids, valid.mask) / len(valid)
    print(f"-ELBO on {len(valid)} held-out draws: {before:.3f} -> {after:.3f} nats/word ({args.steps} steps)")

    step = run.step + args.steps
    checkpoint = save_run(out, model, guide, config=run.config, vocab=run.vocab, step=step, corpus=corpus)
    print(f"wrote {checkpoint}; try: pyroseq evaluate {out}")
    return out


if __name__ == "__main__":
    main()
