"""An autoguide for the DSSM's states on one fixed batch of words, next to the amortised FutureGuide.

``pyro.infer.autoguide`` guides work with pyroseq's models as with any Pyro model, but they are not
amortised: ``AutoNormal(model)`` learns one location and scale per batch slot and step, for whatever
word sits in that slot. They make sense on a fixed batch (the same words in the same slots at every
step, as here), not on a stream of random minibatches; to infer states for new words, use an amortised
guide such as :class:`pyroseq.guides.FutureGuide`. ``AutoNormal``, ``AutoDiagonalNormal``,
``AutoLowRankMultivariateNormal`` and ``AutoIAFNormal`` give a valid bound (the model keeps the steps
after each word's end under N(0, I), so an autoguide pays for its entropy there too); ``AutoDelta``
optimises ``log p(w, h)`` at a point, which is not a bound on ``log p(w)``.

    python examples/autoguide_fixed_batch.py --steps 500
    python examples/autoguide_fixed_batch.py --smoke        # seconds: tiny sizes, a few steps
"""

import argparse

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.guides import FutureGuide
from pyroseq.models import DSSM


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Fit the model with each guide on one batch; return each final -ELBO (nats/word, always >= 0)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default="sample", help="symspell, sample, or a file of `word count` lines"
    )
    parser.add_argument(
        "--words", type=int, default=32, help="the fixed batch: this many words drawn from p(w)"
    )
    parser.add_argument("--state-dim", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 3 steps, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.words, args.state_dim, args.steps = 4, 2, 3

    corpus = load_words(args.source)
    batch = corpus.draw_batch(args.words, seed=args.seed)  # the same words in the same slots every step
    V, D = len(corpus.vocab), args.state_dim
    results = {}
    for name in ("AutoNormal", "FutureGuide"):
        pyro.set_rng_seed(args.seed)
        model = DSSM(vocab_size=V, state_dim=D)
        guide = AutoNormal(model) if name == "AutoNormal" else FutureGuide(vocab_size=V, state_dim=D)
        svi = SVI(
            model, guide, ClippedAdam({"lr": args.lr, "clip_norm": 10.0}), Trace_ELBO(max_plate_nesting=1)
        )
        for step in range(1, args.steps + 1):
            loss = svi.step(batch.ids, batch.mask) / len(batch)
            if step % max(1, args.steps // 4) == 0 or step == args.steps:
                print(f"{name:>12} step {step:5d}  -ELBO {loss:8.3f} nats/word")
        with torch.no_grad():
            elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
            results[name] = elbo.loss(model, guide, batch.ids, batch.mask) / len(batch)
        print(f"{name:>12} final -ELBO (8 particles) {results[name]:8.3f} nats/word: a bound, never below 0")
    return results


if __name__ == "__main__":
    main()
