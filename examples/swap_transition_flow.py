"""Swap the DSSM's transition flow f_G: pyroseq's named flows, or any Pyro conditional transform.

The transition ``h_t = f_G(xi_t; h_{t-1})`` is a conditional normalising flow of white noise. ``flow=``
takes a name (``"triangular"``, ``"coupling"``, ``"spline"``, compositions with ``+``) or any
``pyro.distributions.conditional.ConditionalTransformModule`` with an inverse (the model scores the
guide's states through ``f_G^{-1}``), such as Pyro's own ``conditional_spline`` and
``conditional_affine_coupling``. Each is trained here for the same number of plain-SVI steps, with the KL
term warmed up over the first half (:class:`pyroseq.infer.ScaleLatents`): trained by the plain ELBO from the
start the states collapse to the prior, the model ignores them, and every flow lands at the same bound. Each
is then scored by the unscaled -ELBO on held-out words, with what its states carry (KL per word).

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
from pyroseq.infer import ScaleLatents, check_collapse, warmup_factor
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
    """Train one DSSM per transition flow; return each one's held-out -ELBO (nats/word)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default="sample", help="symspell, sample, or a file of `word count` lines"
    )
    parser.add_argument("--state-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32, help="hidden width of every flow's network")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, help="KL warm-up steps (default: half of --steps)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 2 steps, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.state_dim, args.hidden, args.steps, args.batch_size = 2, 4, 2, 4

    warmup = args.steps // 2 if args.warmup is None else args.warmup
    corpus = load_words(args.source)
    held_out = corpus.draw_batch(4 * args.batch_size, seed=args.seed + 1)
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
        for step in range(args.steps):
            batch = next(batches)
            with ScaleLatents(warmup_factor(step, warmup)):
                svi.step(batch.ids, batch.mask)
        elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
        results[name] = elbo.loss(model, guide, held_out.ids, held_out.mask) / len(held_out)
        kl = check_collapse(model, guide, held_out.ids, held_out.mask)  # warns if the states carry nothing
        print(f"{name:>36}: held-out -ELBO {results[name]:7.3f} nats/word, states carry {kl:5.2f} nats/word")
    return results


if __name__ == "__main__":
    main()
