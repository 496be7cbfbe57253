"""Train the teacher-forced GRU language model with plain Pyro SVI, then decode with every decoder.

The RNN is a Pyro model with observed sites ``w_1..w_T`` and no latent ones: with an empty guide,
``Trace_ELBO`` is its exact negative log-likelihood, so plain ``SVI`` is maximum likelihood. Decoding
(ancestral, greedy, top-k, nucleus, beam) feeds each chosen symbol back into the GRU.

    python examples/rnn_svi_decoders.py --steps 500
    python examples/rnn_svi_decoders.py --smoke        # seconds: tiny sizes, a few steps
"""

import argparse

import pyro
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.decode import DECODERS, decode
from pyroseq.guides import empty_guide
from pyroseq.models import RNNLM

DECODER_OPTIONS = {"topk": {"top_k": 5}, "nucleus": {"top_p": 0.9}, "beam": {"beam_size": 5}}


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    """Train, then return the words each decoder produced."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", default="sample", help="symspell, sample, or a file of `word count` lines"
    )
    parser.add_argument("--state-dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--num", type=int, default=8, help="words per decoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 3 steps, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.state_dim, args.steps, args.batch_size, args.num = 8, 3, 8, 3

    pyro.set_rng_seed(args.seed)
    corpus = load_words(args.source)
    model = RNNLM(vocab_size=len(corpus.vocab), cell="gru", state_dim=args.state_dim)
    svi = SVI(
        model, empty_guide, ClippedAdam({"lr": args.lr, "clip_norm": 10.0}), Trace_ELBO(max_plate_nesting=1)
    )
    batches = corpus.sampler(args.batch_size, seed=args.seed)
    for step in range(1, args.steps + 1):
        batch = next(batches)
        loss = svi.step(batch.ids, batch.mask) / len(batch)
        if step % max(1, args.steps // 5) == 0 or step == args.steps:
            print(f"step {step:5d}  NLL {loss:7.3f} nats/word (exact)")

    model.eval()
    words = {}
    for decoder in DECODERS:
        decoded = decode(
            model, num=args.num, max_length=corpus.max_length, decoder=decoder, seed=args.seed,
            **DECODER_OPTIONS.get(decoder, {}),
        )  # fmt: skip
        words[decoder] = [corpus.vocab.decode(ids) for ids, _ in decoded]
        print(f"{decoder:>9}: " + " ".join(w or "<empty>" for w in words[decoder]))
    return words


if __name__ == "__main__":
    main()
