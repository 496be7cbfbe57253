"""Swap the DSSM's transition flow f_G: pyroseq's named flows, or any Pyro conditional transform.

The transition ``h_t = f_G(xi_t; h_{t-1})`` is a conditional normalising flow of white noise. ``flow=``
takes a name (``"triangular"``, ``"coupling"``, ``"spline"``, compositions with ``+``) or any
``pyro.distributions.conditional.ConditionalTransformModule`` with an inverse (the model scores the
guide's states through ``f_G^{-1}``), such as Pyro's own ``conditional_spline`` and
``conditional_affine_coupling``. Each is trained here for the same number of plain-SVI steps.

    python examples/swap_transition_flow.py --steps 300
    python examples/swap_transition_flow.py --smoke        # seconds: tiny sizes, a few steps
"""

import argparse

import pyro
from pyro.distributions.transforms import conditional_affine_coupling, conditional_spline
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.guides import FutureGuide
from pyroseq.models import DSSM


def transition_flows(state_dim: int, hidden: int) -> dict:
    """Name -> what to pass as ``flow=``: two pyroseq names and two Pyro transforms built by hand."""
    return {
        "triangular (pyroseq)": "triangular",
        "triangular+coupling (pyroseq)": "triangular+coupling",
        "conditional_spline (Pyro)": conditional_spline(
            state_dim, context_dim=state_dim, hidden_dims=[hidden]
        ),
        "conditional_affine_coupling (Pyro)": conditional_affine_coupling(
            state_dim, context_dim=state_dim, hidden_dims=[hidden]
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train one DSSM per transition flow; return each one's mean -ELBO (nats/word) over its last steps."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default="sample", help="symspell, sample, or a file of `word count` lines"
    )
    parser.add_argument("--state-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32, help="hidden width of every flow's network")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 2 steps, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.state_dim, args.hidden, args.steps, args.batch_size = 2, 4, 2, 4

    corpus = load_words(args.source)
    V = len(corpus.vocab)
    results = {}
    for name, flow in transition_flows(args.state_dim, args.hidden).items():
        pyro.set_rng_seed(args.seed)
        model = DSSM(vocab_size=V, state_dim=args.state_dim, flow=flow, flow_hidden=args.hidden)
        guide = FutureGuide(vocab_size=V, state_dim=args.state_dim, flow_hidden=args.hidden)
        svi = SVI(
            model, guide, ClippedAdam({"lr": args.lr, "clip_norm": 10.0}), Trace_ELBO(max_plate_nesting=1)
        )
        batches = corpus.sampler(args.batch_size, seed=args.seed)  # every flow sees the same batches
        losses = [svi.step(b.ids, b.mask) / len(b) for b in (next(batches) for _ in range(args.steps))]
        last = losses[-min(20, len(losses)) :]
        results[name] = sum(last) / len(last)
        print(f"{name:>36}: -ELBO {results[name]:7.3f} nats/word (mean of the last {len(last)} steps)")
    return results


if __name__ == "__main__":
    main()
