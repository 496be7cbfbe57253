r"""# Reading the noise: mutual information per step and the observation entropy

A DSSM has two sources of randomness in every word it generates: the white noise $\xi_t$ that moves the
state, and the emission $w_t \sim p(w_t \mid h_t)$. How much of each step's choice does each decide? With
$h_t = f_G(\xi_t; h_{t-1})$ a bijection in $\xi_t$, the predictive entropy of a step splits exactly into

$$
\underbrace{H\big(\mathbb E_{h_t}[\,p(w_t \mid h_t)\,]\big)}_{\text{all the randomness of } w_t}
= \underbrace{I(\xi_t; w_t \mid \xi_{<t})}_{\text{decided by the noise}}
+ \underbrace{\mathbb E_{h_t}\big[H(p(w_t \mid h_t))\big]}_{\text{left to the emission}},
\qquad h_t \sim p(h_t \mid h_{t-1}).
$$

Schmidt & Hofmann (2018) plot the mutual information per step as box plots over prefixes and find it
highest at $t = 1$. This page trains a DSSM, estimates both terms by nested Monte Carlo with
`pyroseq.evaluate.noise_usage`, and compares them with the same model before training.
"""

# %%
import argparse
from pathlib import Path

import pyro
from matplotlib.figure import Figure
from pyro.infer import SVI, RenyiELBO
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.evaluate import noise_usage, plot_noise_usage
from pyroseq.guides import FutureGuide
from pyroseq.infer import ScaleLatents, warmup_factor
from pyroseq.models import DSSM

parser = argparse.ArgumentParser(description="Reading the noise")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, as CI runs this page")
parser.add_argument("--out", type=Path, default=Path("docs/tutorials/img"), help="where the figures go")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

pyro.set_rng_seed(0)
pyro.clear_param_store()
STEPS, BATCH, D, K = (4, 16, 4, 2) if args.smoke else (800, 128, 16, 4)
N, M = (4, 4) if args.smoke else (100, 100)  # outer prefixes, inner draws per prefix and step
corpus = load_words("sample") if args.smoke else load_words("symspell", top=10_000)
V, T = len(corpus.vocab), corpus.max_length

# %% [markdown]
# ## Before training
#
# `noise_usage` draws $N$ prefixes $h_{t-1}$ from the prior and, for each, $M$ states $h_t$; then the MI
# is $H(\text{mean}_m\, p_m) - \text{mean}_m H(p_m)$ with $p_m = p(w_t \mid h^m_t)$. It is biased low by
# $O(1/M)$, and exactly 0 for an emission that ignores the state.

# %%
model = DSSM(vocab_size=V, state_dim=D, flow="triangular")
model.eval()
before = noise_usage(model, length=T, num_outer=N, num_inner=M, progress=False)
print("MI per step (nats):     ", [round(x, 3) for x in before.mean_mutual_information.tolist()])
print("entropy per step (nats):", [round(x, 2) for x in before.mean_entropy.tolist()])

# %% [markdown]
# ## Training
#
# The recipe of [the DSSM in ten minutes](01_dssm_in_ten_minutes.md): plain `SVI` on the
# importance-weighted bound, with the future-conditioned guide.

# %%
guide = FutureGuide(vocab_size=V, state_dim=D, flow="diagonal")
svi = SVI(
    model,
    guide,
    ClippedAdam({"lr": 3e-3, "clip_norm": 10.0, "lrd": 0.1 ** (1 / STEPS)}),
    RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1),
)
model.train()
batches = corpus.sampler(BATCH, seed=0)
losses = []
for step in range(STEPS):
    batch = next(batches)
    with ScaleLatents(
        warmup_factor(step, STEPS // 2)
    ):  # KL warm-up over the first half, as pyroseq train does
        losses.append(svi.step(batch.ids, batch.mask) / len(batch))
print(f"-IWAE_{K}, mean of the last steps: {sum(losses[-20:]) / len(losses[-20:]):.3f} nats/word")

# %% [markdown]
# ## After training
#
# `plot_noise_usage` draws the paper's figure: box plots over the $N$ prefixes at every step.

# %%
model.eval()
after = noise_usage(model, length=T, num_outer=N, num_inner=M, progress=False)
print("MI per step (nats):     ", [round(x, 3) for x in after.mean_mutual_information.tolist()])
print("entropy per step (nats):", [round(x, 2) for x in after.mean_entropy.tolist()])
plot_noise_usage(after, args.out / "05_noise_usage.png")

# %% [markdown]
# ![Noise usage after training](img/05_noise_usage.png)
#
# The decomposition itself, before and after training: the height of each bar is the predictive entropy
# of step $t$, split into the part the noise decides and the part left to the emission.

# %%
fig = Figure(figsize=(10, 3.6), layout="constrained")
axes = fig.subplots(1, 2, sharey=True)
steps = list(range(1, T + 1))
for ax, (title, usage) in zip(axes, [("before training", before), ("after training", after)], strict=True):
    mi, entropy = usage.mean_mutual_information, usage.mean_entropy
    ax.bar(steps, mi, label=r"$I(\xi_t; w_t \mid \xi_{<t})$: the noise")
    ax.bar(steps, entropy, bottom=mi, label=r"$E\,H(p(w_t \mid h_t))$: the emission")
    ax.set(title=title, xlabel="step t")
    ax.legend(fontsize=8)
axes[0].set_ylabel("nats")
fig.savefig(args.out / "05_decomposition.png", dpi=110)

# %% [markdown]
# ![Predictive entropy per step, split into noise and emission](img/05_decomposition.png)
#
# How to read it: a step whose mutual information is near zero draws nothing from its noise, and its
# symbol is left to the emission alone; the noise is used where the bars' lower part is tall. On the
# D = 16 model of [Results](../results.md) (5,000 training steps) the MI is 0.82 nats at $t = 1$ and falls
# to 0.02 by $t = 13$, as in the paper: the noise decides how a word begins, and later letters, which the
# beginning constrains, draw on it less; most words have ended by step 6 (the mean length is 5.9 symbols
# with EOS). The run on this page is much shorter; its figures show how far training has moved the model
# from its initial state, where the emission is nearly uniform and the noise decides little.
