r"""# Swapping flows and guides

The DSSM has two flows: the model's transition $h_t = f_G(\xi_t; h_{t-1})$ and the guide's own
$f_Q(\cdot\,; h_{t-1}, b_t)$. Both are arguments: a name from pyroseq's registry, a composition of names, or
any Pyro `ConditionalTransformModule` that has an inverse. This page trains the same model with different
choices of each, on the same data stream and budget, and compares their held-out bounds.
"""

# %%
import argparse
from pathlib import Path

import pyro
import pyro.distributions.transforms as T
from matplotlib.figure import Figure
from pyro.infer import SVI, RenyiELBO
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.errors import ConfigError
from pyroseq.flows import FLOWS, make_flow
from pyroseq.guides import FutureGuide, GaussianGuide
from pyroseq.infer import ScaleLatents, warmup_factor
from pyroseq.models import DSSM

parser = argparse.ArgumentParser(description="Swapping flows and guides")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, as CI runs this page")
parser.add_argument("--out", type=Path, default=Path("docs/tutorials/img"), help="where the figures go")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

STEPS, BATCH, D, K, EVERY = (4, 16, 4, 2, 2) if args.smoke else (400, 64, 8, 4, 50)
corpus = load_words("sample") if args.smoke else load_words("symspell", top=10_000)
V = len(corpus.vocab)
held_out = corpus.draw_batch(32 if args.smoke else 512, seed=1)

# %% [markdown]
# ## The flows pyroseq names
#
# `make_flow(name, input_dim=D, context_dim=C)` builds one; `"a+b"` composes two, `a` acting on the noise
# first. Every named flow has a one-pass inverse, which the model needs: the guide proposes a state $h_t$,
# and the model scores it as $\log \mathcal N(f_G^{-1}(h_t; h_{t-1}); 0, I) +
# \log\lvert\det \partial f_G^{-1}/\partial h_t\rvert$.

# %%
print("named flows:", ", ".join(FLOWS))
flow = make_flow("triangular+coupling", input_dim=D, context_dim=D)
print(type(flow).__name__, "with", sum(p.numel() for p in flow.parameters()), "parameters")

# %% [markdown]
# A flow without an analytic inverse cannot be the model's transition, and the model says so when it is
# built, rather than failing (or silently caching) later:

# %%
try:
    DSSM(vocab_size=V, state_dim=D, flow=T.conditional_planar(D, context_dim=D))
except ConfigError as error:
    print("ConfigError:", error)

# %% [markdown]
# ## One training function for every configuration
#
# Plain Pyro: `SVI` with the importance-weighted bound ($K$ particles), the same seed and the same batches
# for every configuration. Every `svi.evaluate_loss` on the held-out words is $-\mathrm{IWAE}_K$ summed over
# them; divided by their number it is nats per word. The param store is cleared first, so that one
# configuration's parameters never leak into the next.


# %%
def train(model, guide):
    """Held-out -IWAE_K (nats/word) every EVERY steps of SVI."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    loss = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, ClippedAdam({"lr": 3e-3, "clip_norm": 10.0}), loss)
    batches = corpus.sampler(BATCH, seed=0)
    curve = []
    for step in range(1, STEPS + 1):
        batch = next(batches)
        with ScaleLatents(warmup_factor(step - 1, STEPS // 2)):  # KL warm-up: else the states collapse
            svi.step(batch.ids, batch.mask)
        if step % EVERY == 0:
            curve.append((step, svi.evaluate_loss(held_out.ids, held_out.mask) / len(held_out)))
    return curve


# %% [markdown]
# ## The model's flow
#
# Four transitions under the same guide (a future-conditioned guide with a diagonal flow): the elementwise
# `diagonal`, the paper's lower-triangular `triangular`, Real NVP `coupling` layers, and Pyro's own
# `conditional_affine_coupling`, passed in as an object.

# %%
model_flows = {
    "diagonal": "diagonal",
    "triangular": "triangular",
    "coupling": "coupling",
    "Pyro's conditional_affine_coupling": T.conditional_affine_coupling(D, context_dim=D),
}
by_model_flow = {}
for label, flow in model_flows.items():
    model = DSSM(vocab_size=V, state_dim=D, flow=flow)
    guide = FutureGuide(vocab_size=V, state_dim=D, flow="diagonal")
    by_model_flow[label] = train(model, guide)
    print(f"model flow {label:36s} held-out -IWAE_{K} {by_model_flow[label][-1][1]:.3f} nats/word")

# %% [markdown]
# ## The guide
#
# Three guides for the same model (a `triangular` transition): a Gaussian $q(h_t \mid h_{t-1}, w_{t:T})$
# without a flow, and the future-conditioned guide with a `diagonal` or a `coupling` flow. Any callable
# `guide(ids, mask)` that samples the model's latent sites works as well.

# %%
guides = {
    "Gaussian (no flow)": lambda: GaussianGuide(vocab_size=V, state_dim=D),
    "future, diagonal flow": lambda: FutureGuide(vocab_size=V, state_dim=D, flow="diagonal"),
    "future, coupling flow": lambda: FutureGuide(vocab_size=V, state_dim=D, flow="coupling"),
}
by_guide = {}
for label, make_guide in guides.items():
    by_guide[label] = train(DSSM(vocab_size=V, state_dim=D, flow="triangular"), make_guide())
    print(f"guide {label:24s} held-out -IWAE_{K} {by_guide[label][-1][1]:.3f} nats/word")

# %%
fig = Figure(figsize=(10, 3.8), layout="constrained")
axes = fig.subplots(1, 2, sharey=True)
for ax, (title, curves) in zip(axes, [("model flow", by_model_flow), ("guide", by_guide)], strict=True):
    for label, curve in curves.items():
        ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", ms=3, label=label)
    ax.axhline(corpus.entropy_nats, color="k", ls="--", lw=1, label="H(p)")
    ax.set(title=f"choosing the {title}", xlabel="SVI step")
    ax.legend(fontsize=8)
axes[0].set_ylabel(f"held-out -IWAE$_{K}$, nats/word")
fig.savefig(args.out / "02_flows_and_guides.png", dpi=110)

# %% [markdown]
# ![Held-out bounds for each flow and guide](img/02_flows_and_guides.png)
#
# This is a short budget on a shared CPU: differences of a few tenths of a nat at 400 steps say which
# configuration learns fastest, not which is best at convergence. The paper found the generative flow should
# be the more powerful one; [Results](../results.md) has longer runs.
