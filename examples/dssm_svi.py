"""Train a deep state-space model on words with plain Pyro SVI: no pyroseq training loop.

The model is a Pyro model (conditional-flow transitions, observed symbols), the guide a Pyro guide
(a backward RNN over the future, a Gaussian base and its own flow). Everything else is ordinary Pyro:
``SVI``, ``pyro.optim``, ``Trace_ELBO`` or ``RenyiELBO``, and ``Predictive`` to draw words. The KL term
is warmed up over the first half of the steps (:class:`pyroseq.infer.ScaleLatents`, as ``pyroseq train``
does), without which the states collapse to the prior; :func:`pyroseq.infer.check_collapse` says if they did.
With ``--ema D`` a moving average of the parameters (:class:`pyroseq.infer.ParameterEMA`, over Pyro's param
store) is kept beside SVI's own, and the words are drawn from the averaged model.

    python examples/dssm_svi.py --steps 500
    python examples/dssm_svi.py --steps 500 --ema 0.99
    python examples/dssm_svi.py --smoke        # seconds: tiny sizes, a few steps
"""

import argparse
import contextlib

import pyro
import torch
from pyro.infer import SVI, Predictive, RenyiELBO, Trace_ELBO
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.guides import FutureGuide
from pyroseq.infer import ParameterEMA, ScaleLatents, check_collapse, warmup_factor
from pyroseq.models import DSSM


def main(argv: list[str] | None = None) -> float:
    """Train, print progress and sample words; return the mean -ELBO (nats/word) of the last 10 steps."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default="sample", help="symspell, sample, or a file of `word count` lines"
    )
    parser.add_argument("--top", type=int, default=None)
    parser.add_argument("--state-dim", type=int, default=16)
    parser.add_argument("--flow", default="triangular", help="the model's transition flow")
    parser.add_argument("--guide-flow", default="diagonal", help="the guide's own flow")
    parser.add_argument("--iwae", type=int, default=0, help="K > 1: train on the IWAE bound with K particles")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, help="KL warm-up steps (default: half of --steps)")
    parser.add_argument("--ema", type=float, default=0.0, help="decay of the parameters' average (0: none)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 3 steps, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.state_dim, args.steps, args.batch_size = 4, 3, 8

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    corpus = load_words(args.source, top=args.top)
    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=args.state_dim, flow=args.flow)
    guide = FutureGuide(vocab_size=V, state_dim=args.state_dim, flow=args.guide_flow)

    if args.iwae > 1:
        loss = RenyiELBO(alpha=0, num_particles=args.iwae, vectorize_particles=True, max_plate_nesting=1)
    else:
        loss = Trace_ELBO(max_plate_nesting=1)
    svi = SVI(model, guide, ClippedAdam({"lr": args.lr, "clip_norm": 10.0}), loss)

    warmup = args.steps // 2 if args.warmup is None else args.warmup
    batches = corpus.sampler(args.batch_size, seed=args.seed)
    ema = ParameterEMA(decay=args.ema) if args.ema else None  # Pyro's param store, by name
    losses = []
    for step in range(1, args.steps + 1):
        batch = next(batches)
        with ScaleLatents(warmup_factor(step - 1, warmup)):  # the bound itself from step `warmup` on
            losses.append(svi.step(batch.ids, batch.mask) / len(batch))
        if ema is not None:
            ema.update()
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"step {step:5d}  -ELBO {losses[-1]:8.3f} nats/word")
    check_collapse(model, guide, batch.ids, batch.mask)  # a warning if the states carry nothing

    # Draw words from the model: no observations, so every w_t is sampled.
    T = corpus.max_length
    averaged = ema.applied() if ema is not None else contextlib.nullcontext()
    with averaged:  # the averages in place of the parameters; SVI's own again after the block
        draws = Predictive(model, num_samples=1, return_sites=[f"w_{t}" for t in range(1, T + 1)])(
            None, torch.ones(10, T, dtype=torch.bool)
        )
    ids = torch.stack([draws[f"w_{t}"][0] for t in range(1, T + 1)], dim=-1)  # (10, T)
    print("samples:", " ".join(corpus.vocab.decode(row) or "<empty>" for row in ids))
    final = sum(losses[-10:]) / len(losses[-10:])  # one batch's loss is noisy: average the last steps
    print(f"mean -ELBO of the last {len(losses[-10:])} steps: {final:.3f} nats/word")
    return final


if __name__ == "__main__":
    main()
