"""Write your own guide for the DSSM from scratch, and train it with plain Pyro SVI.

The DSSM (a Pyro model) has one latent site ``"h"``, the state trajectory, of event shape ``(T, D)``
inside ``pyro.plate("seqs", B, dim=-1)``, and observed sites ``w_1..w_T``. A guide is any Pyro program
with the model's arguments ``(ids, mask)`` that draws ``"h"`` in the same plate. The model puts the steps
after each word's end under N(0, I) (they affect nothing observed), so a guide that ignores the mask still
gives a valid bound: it only pays for its mismatch there.

The guide written here is a small amortised one: a bidirectional GRU reads the word and gives every step
a Gaussian ``q(h_t | w) = N(mu_t(w), diag sigma_t(w)^2)``, independent over steps (mean-field in time). It
is a ``PyroModule``, so Pyro's SVI finds its parameters, and pyroseq's ``Trainer`` would too. Both guides
are trained with the KL term warmed up over the first half of the steps (:class:`pyroseq.infer.ScaleLatents`,
as ``pyroseq train`` does): by the plain ELBO from the start the states collapse to the prior and the guides
cannot be told apart; :func:`pyroseq.infer.check_collapse` warns if that happened.

    python examples/own_guide.py --steps 300
    python examples/own_guide.py --smoke        # seconds: tiny sizes, a few steps
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from pyro.optim import ClippedAdam
from torch import nn

from pyroseq.data.words import load_words
from pyroseq.guides import FutureGuide
from pyroseq.infer import ScaleLatents, check_collapse, warmup_factor
from pyroseq.models import DSSM


class BiGRUGuide(PyroModule):
    """``q(h | w) = prod_t N(h_t; mu_t(w), diag sigma_t(w)^2)`` from a bidirectional GRU over the word."""

    def __init__(self, vocab_size: int, state_dim: int, hidden: int = 32) -> None:
        super().__init__(name="my_guide")  # a name of its own in Pyro's param store
        self.embed = nn.Embedding(vocab_size, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.loc = nn.Linear(2 * hidden, state_dim)
        self.scale = nn.Linear(2 * hidden, state_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        features, _ = self.rnn(self.embed(ids))  # (B, T, 2H): the whole word, both directions
        loc = self.loc(features)  # (B, T, D)
        scale = nn.functional.softplus(self.scale(features)) + 1e-3  # (B, T, D)
        with pyro.plate("seqs", ids.shape[0], dim=-1):
            pyro.sample("h", dist.Normal(loc, scale).to_event(2))  # event (T, D), like the model's site


def train(model, guide, corpus, *, steps: int, warmup: int, batch_size: int, lr: float, seed: int) -> float:
    """Plain SVI with the KL term warmed up over ``warmup`` steps; returns the mean -ELBO (nats/word) of
    the last steps."""
    pyro.set_rng_seed(seed)
    svi = SVI(model, guide, ClippedAdam({"lr": lr, "clip_norm": 10.0}), Trace_ELBO(max_plate_nesting=1))
    batches = corpus.sampler(batch_size, seed=seed)
    losses = []
    for step in range(steps):
        batch = next(batches)
        with ScaleLatents(warmup_factor(step, warmup)):
            losses.append(svi.step(batch.ids, batch.mask) / len(batch))
    check_collapse(model, guide, batch.ids, batch.mask)  # a warning if the states carry nothing
    last = losses[-min(20, len(losses)) :]
    return sum(last) / len(last)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train the DSSM with the hand-written guide and with pyroseq's FutureGuide; return both -ELBOs."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default="sample", help="symspell, sample, or a file of `word count` lines"
    )
    parser.add_argument("--state-dim", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, help="KL warm-up steps (default: half of --steps)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 2 steps, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.state_dim, args.steps, args.batch_size = 2, 2, 4

    warmup = args.steps // 2 if args.warmup is None else args.warmup
    corpus = load_words(args.source)
    V, D = len(corpus.vocab), args.state_dim
    results = {}
    for name, make_guide in (
        ("BiGRUGuide (this file)", lambda: BiGRUGuide(V, D, hidden=8 if args.smoke else 32)),
        ("FutureGuide (pyroseq)", lambda: FutureGuide(vocab_size=V, state_dim=D)),
    ):
        torch.manual_seed(args.seed)
        model, guide = DSSM(vocab_size=V, state_dim=D), make_guide()
        sizes = {"steps": args.steps, "warmup": warmup, "batch_size": args.batch_size}
        results[name] = train(model, guide, corpus, **sizes, lr=args.lr, seed=args.seed)
        print(f"{name:>24}: -ELBO {results[name]:7.3f} nats/word after {args.steps} steps")
    return results


if __name__ == "__main__":
    main()
