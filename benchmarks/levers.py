"""Screen the DSSM's learning levers at a fixed budget, beside the teacher-forced GRU (issue 27).

One call trains one configuration from step 0 with the library's own pieces (the ``Trainer``, the word
estimators), evaluates the cross-entropy against p(w) every ``--every`` steps by the same estimator, and
appends one JSON line to ``--out`` (default ``benchmarks/results/levers.jsonl``): the options, the final
CE (guide IWAE with ``--eval-k`` particles for a DSSM, exact for the GRU), its standard error, the
vocabulary mass, the training CPU seconds (evaluations excluded) and the learning curve
``[[step, train CPU s, CE], ...]``; with ``--ema``, the curve of each moving average of the parameters too
(``ema_curves``: ``{decay: [[step, CE], ...]}``, the same estimator). Every figure in docs/results.md's lever tables is a line of that file.

    python benchmarks/levers.py --objective dreg --particles 4            # DSSM, D = 16, symspell
    python benchmarks/levers.py --model rnn --source german               # the GRU on the second list
    python benchmarks/levers.py --emitter-bias default --objective elbo   # the README's old recipe
    python benchmarks/levers.py --objective dreg --particle-schedule 4:1000 8:2000 16:3000   # K rising

``benchmarks/data/names300.txt`` is a user's own short list for ``--source``: the 300 most frequent female first
names of the 1990 US census (public domain; the ``dist.female.first`` file that the ``names`` package ships), with
their frequencies per 100,000 people as counts.

The learning rate decays geometrically towards lr * 0.1 over ``--horizon`` steps (20,000: the study's
horizon), so a screen at 1,000 or 3,000 steps sees the start of a long run, not a run squeezed into the budget.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import pyro
import torch

from pyroseq.data.words import load_words
from pyroseq.evaluate.words import word_log_probs, word_metrics
from pyroseq.guides import FutureGuide, empty_guide
from pyroseq.infer import FreeBitsELBO, ParameterEMA
from pyroseq.infer.trainer import ObjectiveModule, Trainer
from pyroseq.models import DSSM, RNNLM, init_emitter_bias

RESULTS = Path(__file__).parent / "results" / "levers.jsonl"


def k_until(text: str) -> tuple[int, int]:
    """``"K:STEP"`` -> ``(K, STEP)``, both positive integers."""
    try:
        k, until = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"K:STEP with two integers, got {text!r}") from None
    if k < 1 or until < 1:
        raise argparse.ArgumentTypeError(f"K and STEP must be positive, got {text!r}")
    return k, until


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["dssm", "rnn"], default="dssm")
    p.add_argument("--source", default="symspell", help="symspell, german, or a word-count file")
    p.add_argument("--top", type=int, default=10_000)
    p.add_argument("--state-dim", type=int, default=16)
    p.add_argument(
        "--objective",
        choices=["elbo", "iwae", "dreg", "fivo"],
        default="elbo",
        help="fivo: the particle filter's bound with the guide proposing (pyroseq.infer.FIVO)",
    )
    p.add_argument("--particles", type=int, default=1)
    p.add_argument(
        "--particle-schedule",
        nargs="+",
        type=k_until,
        metavar="K:STEP",
        help="K particles up to and including STEP, e.g. 4:1000 8:2000 16:3000 (the last K holds after its "
        "STEP); it overrides --particles",
    )
    p.add_argument(
        "--free-bits", type=float, default=0.0, help="FreeBitsELBO's floor per word (nats); 0: off"
    )
    p.add_argument(
        "--kl-warmup",
        type=int,
        default=None,
        help="steps [default: the Trainer's, 500 for a DSSM, none for FIVO, which scores the laws itself]",
    )
    p.add_argument("--emitter-bias", choices=["unigram", "default"], default="unigram")
    # The networks (unset: the library's defaults): DSSM(flow, flow_hidden, emitter_hidden, emitter_layers) and
    # FutureGuide(rnn_hidden, embed_dim, flow).
    p.add_argument("--flow", help="the transition flow (pyroseq.flows.make_flow)")
    p.add_argument("--flow-hidden", type=int, help="the transition flow's hypernet width")
    p.add_argument("--emitter-hidden", type=int)
    p.add_argument("--emitter-layers", type=int)
    p.add_argument("--guide-hidden", type=int, help="the guide's backward GRU width")
    p.add_argument("--guide-embed", type=int, help="the guide's symbol embedding width")
    p.add_argument("--guide-flow", help="the guide's flow ('none': no flow)")
    p.add_argument("--lr", type=float, default=6e-3)
    p.add_argument(
        "--guide-lr-scale", type=float, default=1.0, help="the guide's learning rate as a multiple of --lr"
    )
    p.add_argument("--betas", type=float, nargs=2, help="Adam's moment decay rates [default: the Trainer's]")
    p.add_argument("--horizon", type=int, default=20_000, help="steps over which the lr decays to lr * 0.1")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--every", type=int, default=500, help="evaluate the CE every N steps")
    p.add_argument("--eval-k", type=int, default=100, help="guide IWAE particles per word for a DSSM's CE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ema",
        type=float,
        nargs="*",
        default=[],
        help="also evaluate the parameters' moving average with each of these decays (ParameterEMA)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def given(**options) -> dict:
    """The options set on the command line; the others keep the library's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    pyro.set_rng_seed(args.seed)
    schedule = args.particle_schedule or []
    if [until for _, until in schedule] != sorted({until for _, until in schedule}):
        raise SystemExit(
            "--particle-schedule: the steps must rise, got "
            + " ".join(f"{k}:{until}" for k, until in schedule)
        )
    if schedule:
        args.particles = schedule[0][0]
    corpus = load_words(args.source, top=args.top)
    V, D = len(corpus.vocab), args.state_dim
    if args.model == "dssm":
        model = DSSM(vocab_size=V, state_dim=D, **given(flow=args.flow, flow_hidden=args.flow_hidden,
                     emitter_hidden=args.emitter_hidden, emitter_layers=args.emitter_layers))  # fmt: skip
        guide_flow = (
            {"flow": None if args.guide_flow == "none" else args.guide_flow} if args.guide_flow else {}
        )
        guide = FutureGuide(vocab_size=V, state_dim=D, **guide_flow,
                            **given(rnn_hidden=args.guide_hidden, embed_dim=args.guide_embed))  # fmt: skip
    else:
        model, guide = RNNLM(vocab_size=V, state_dim=D), empty_guide
    if args.emitter_bias == "unigram":
        init_emitter_bias(
            model, corpus.batch().ids, weights=torch.as_tensor(corpus.counts, dtype=torch.float64)
        )
    warmup = args.kl_warmup if args.model == "dssm" else 0
    trainer = Trainer(model, guide, objective=args.objective, particles=args.particles,
                      lr=args.lr, total_steps=args.horizon, kl_warmup=warmup,
                      **given(betas=args.betas and tuple(args.betas)))  # fmt: skip
    if args.free_bits and args.objective != "elbo":
        raise SystemExit(
            f"--free-bits is a floor under the ELBO's KL terms: drop --objective {args.objective}"
        )
    if args.free_bits:  # an objective the Trainer does not name: handed in as a Pyro objective
        trainer.loss = FreeBitsELBO(free_nats=args.free_bits, num_particles=args.particles)
        trainer.objective = ObjectiveModule(model, guide, trainer.loss)
    if args.guide_lr_scale != 1.0:  # two parameter groups, the same schedule
        guide_ids = {id(q) for q in guide.parameters()}
        groups = [
            [q for q in trainer.params if (id(q) in guide_ids) == is_guide] for is_guide in (False, True)
        ]
        trainer.optimizer = torch.optim.Adam(
            [{"params": groups[0]}, {"params": groups[1], "lr": args.lr * args.guide_lr_scale}],
            lr=args.lr, betas=trainer.betas,
        )  # fmt: skip
        trainer.scheduler = torch.optim.lr_scheduler.ExponentialLR(trainer.optimizer, gamma=trainer._gamma)
    words = corpus.encode()

    def evaluate() -> dict:
        with torch.no_grad():
            estimate = word_log_probs(model, guide, words, num_samples=args.eval_k)
        return word_metrics(estimate, corpus.probs)

    batches = corpus.sampler(args.batch_size, seed=args.seed)
    curve, train_cpu = [], 0.0
    modules = [m for m in (model, guide) if isinstance(m, torch.nn.Module)]
    averages = {decay: ParameterEMA(modules, decay=decay) for decay in args.ema}
    ema_curves: dict[float, list] = {decay: [] for decay in args.ema}
    for step in range(1, args.steps + 1):
        if schedule:  # the first (K, until) whose until is not yet passed, else the last K
            trainer.loss.num_particles = next((k for k, until in schedule if step <= until), schedule[-1][0])
        began = time.process_time()
        figures = trainer.step(next(batches))
        for ema in averages.values():
            ema.update()
        train_cpu += time.process_time() - began
        if step % args.every == 0 or step == args.steps:
            for decay, ema in averages.items():
                with ema.applied():
                    ema_curves[decay].append([step, evaluate()["ce_nats"]])
                print(f"   averaged ({decay}): CE {ema_curves[decay][-1][1]:.3f}", flush=True)
            metrics = evaluate()
            curve.append([step, round(train_cpu, 1), metrics["ce_nats"]])
            print(f"step {step}  loss {figures['loss']:.3f}  CE {metrics['ce_nats']:.3f}  {train_cpu:.0f} CPU s",
                  flush=True)  # fmt: skip
    record = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ce": metrics["ce_nats"], "ce_stderr": metrics["ce_stderr"], "vocab_mass": metrics["vocab_mass"],
        "estimator": metrics["estimator"], "k": metrics["samples"], "train_cpu_s": round(train_cpu, 1),
        "curve": curve, "ema_curves": ema_curves, "trained_by": type(trainer.loss).__name__,
        "particles_at_end": getattr(trainer.loss, "num_particles", None), "torch": torch.__version__,
        # the transition flow trained, named even where the library's default was left (defaults change)
        "model_flow": (args.flow or inspect.signature(DSSM).parameters["flow"].default) if args.model == "dssm"
        else None,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in ("ce", "ce_stderr", "vocab_mass", "train_cpu_s")}))


if __name__ == "__main__":
    main()
