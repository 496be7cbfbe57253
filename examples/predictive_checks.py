"""Posterior and prior predictive checks of a DSSM with ArviZ: plots, LOO and WAIC.

Train a small DSSM with plain SVI, then draw replicated words for a batch of observed ones:

* ``posterior_predictive``: states from the guide on each word's steps, then the model's own transition
  after the word's end, and the symbols from the model. (Plain ``Predictive(model, guide=guide)`` would
  hand back the observed words as every replicate: the model's ``w_t`` sites have ``obs=``; pyroseq runs
  the model under ``poutine.uncondition``.)
* ``prior_predictive``: words from the model alone.

Both give the words (cut at EOS) and an ``arviz.InferenceData`` with dims ``seq`` and ``step``; the
posterior one has a ``log_likelihood`` group, so ``az.loo`` and ``az.waic`` run on it. The plots compare
the replicated word lengths with the observed ones.

    python examples/predictive_checks.py --steps 500 --out ppc
    python examples/predictive_checks.py --smoke        # seconds: tiny sizes, a few steps
"""

import argparse
import tempfile
import warnings
from pathlib import Path

import arviz as az
import pyro
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.guides import FutureGuide
from pyroseq.infer import ScaleLatents, check_collapse, warmup_factor
from pyroseq.models import DSSM
from pyroseq.predictive import plot_ppc, posterior_predictive, prior_predictive


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Train, check and plot; return the paths of the two plots."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default="sample", help="symspell, sample, or a file of `word count` lines"
    )
    parser.add_argument("--state-dim", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--words", type=int, default=128, help="observed words to replicate")
    parser.add_argument("--samples", type=int, default=20, help="replicates per word")
    parser.add_argument(
        "--out", type=Path, default=None, help="where the plots go (default: a temporary dir)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, help="KL warm-up steps (default: half of --steps)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 2 steps, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.state_dim, args.steps, args.batch_size, args.words, args.samples = 2, 2, 4, 6, 3
    out = args.out or Path(tempfile.mkdtemp(prefix="pyroseq-ppc-"))
    out.mkdir(parents=True, exist_ok=True)

    pyro.set_rng_seed(args.seed)
    corpus = load_words(args.source)
    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=args.state_dim)
    guide = FutureGuide(vocab_size=V, state_dim=args.state_dim)
    svi = SVI(model, guide, ClippedAdam({"lr": 3e-3, "clip_norm": 10.0}), Trace_ELBO(max_plate_nesting=1))
    warmup = args.steps // 2 if args.warmup is None else args.warmup
    batches = corpus.sampler(args.batch_size, seed=args.seed)
    for step in range(args.steps):
        batch = next(batches)
        with ScaleLatents(warmup_factor(step, warmup)):  # KL warm-up, as pyroseq train does
            loss = svi.step(batch.ids, batch.mask) / len(batch)
    print(f"trained {args.steps} steps, last -ELBO {loss:.3f} nats/word")
    check_collapse(model, guide, batch.ids, batch.mask)  # a warning if the states carry nothing

    model.eval()
    guide.eval()
    observed = corpus.draw_batch(args.words, seed=args.seed + 1)
    plots = {}
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # ArviZ's notices (and Pareto-k warnings: each word has its own states)
        for draws in (
            posterior_predictive(model, guide, observed, num_samples=args.samples),
            prior_predictive(model, observed, num_samples=args.samples),
        ):
            idata = draws.to_inferencedata()
            lengths = draws.lengths().float()
            print(f"{draws.kind} predictive ({draws.drawn}):")
            print(f"  mean length {lengths.mean():.2f} (observed {idata.observed_data['length'].mean():.2f})")
            print("  e.g. " + " ".join(repr(w) for w in draws.words(corpus.vocab)[0][:6]))
            if draws.kind == "posterior":
                loo, waic = az.loo(idata).elpd_loo, az.waic(idata).elpd_waic
                print(f"  elpd_loo {loo:.1f}, elpd_waic {waic:.1f} (nats)")
            plots[draws.kind] = plot_ppc(idata, out / f"ppc_{draws.kind}_length.png")
            print(f"  plot: {plots[draws.kind]}")
    return plots


if __name__ == "__main__":
    main()
