"""Signal-to-noise ratio of IWAE's and DReG's gradients against K, on a Gaussian toy (seconds on a CPU).

The toy: z ~ N(theta, 1), x ~ N(z, 1) with x = 1, guide q(z) = N(loc, scale^2) at loc = 0.3, scale = 0.6
(the posterior is N(0.5, 0.5)). B independent copies sit in the sequence plate, each with its own
parameters, so one backward pass gives B independent draws of each estimator; the SNR of a parameter's
gradient is |mean| / standard deviation over the draws (Rainforth et al. 2018). IWAE's guide SNR falls like
1 / sqrt(K), DReG's grows; the model's (theta) is the same for both.

    python benchmarks/dreg_snr.py --particles 4 16 64 256 1024 4096 --draws 1000 --out snr.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyroseq.infer import IWAE, DReG

X, THETA, LOC, SCALE = 1.0, 0.0, 0.3, 0.6
NAMES = ("theta", "loc", "scale")  # gradients in the unconstrained parameters: theta, loc, log scale


def toy_model(x: torch.Tensor) -> None:
    theta = pyro.param("theta", torch.full(x.shape, THETA))
    with pyro.plate("seqs", len(x), dim=-1):
        z = pyro.sample("z", dist.Normal(theta, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def toy_guide(x: torch.Tensor) -> None:
    loc = pyro.param("loc", torch.full(x.shape, LOC))
    scale = pyro.param("scale", torch.full(x.shape, SCALE), constraint=constraints.positive)
    with pyro.plate("seqs", len(x), dim=-1):
        pyro.sample("z", dist.Normal(loc, scale))


def toy_gradients(objective, draws: int, *, loc: float = LOC, scale: float = SCALE, seed: int = 0):
    """``{name: (draws,) gradient of the loss}``: independent draws of the objective's estimator."""
    pyro.clear_param_store()
    pyro.param("loc", torch.full((draws,), loc))
    pyro.param("scale", torch.full((draws,), scale), constraint=constraints.positive)
    pyro.set_rng_seed(seed)
    loss = objective.differentiable_loss(toy_model, toy_guide, torch.full((draws,), X))
    grads = torch.autograd.grad(loss, [pyro.param(n).unconstrained() for n in NAMES])
    return dict(zip(NAMES, grads, strict=True))


def snr_table(particles: list[int], draws: int) -> list[dict]:
    rows = []
    for K in particles:
        for objective in (IWAE(num_particles=K), DReG(num_particles=K)):
            grads = toy_gradients(objective, draws)
            row = {"objective": type(objective).__name__, "K": K}
            for name, g in grads.items():
                mean, sd = float(g.mean()), float(g.std())
                row[name] = {"mean": mean, "sd": sd, "snr": abs(mean) / sd}
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--particles", type=int, nargs="+", default=[4, 16, 64, 256, 1024, 4096])
    parser.add_argument("--draws", type=int, default=1000, help="independent draws of each estimator")
    parser.add_argument("--out", type=Path, help="write the table as JSON")
    args = parser.parse_args()
    rows = snr_table(args.particles, args.draws)
    print(f"{'objective':9} {'K':>5}  " + "  ".join(f"{n + ' SNR':>10} {n + ' sd':>9}" for n in NAMES))
    for row in rows:
        cells = "  ".join(f"{row[n]['snr']:10.3f} {row[n]['sd']:9.5f}" for n in NAMES)
        print(f"{row['objective']:9} {row['K']:5d}  {cells}")
    if args.out:
        args.out.write_text(json.dumps({"draws": args.draws, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
