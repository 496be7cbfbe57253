r"""# Predictive checks with ArviZ

Does a trained model generate data that look like the data it was trained on? A **posterior predictive
check** draws replicates $w^{\mathrm{rep}} \sim p(w \mid h)$, $h \sim q(h \mid w)$, for each observed word
$w$, and compares a statistic of the replicates with the same statistic of the data; a **prior predictive
check** draws from the model alone. pyroseq returns the draws as words and as an ArviZ `InferenceData`
(dims `seq` and `step`, with a `log_likelihood` group), so ArviZ's plots and `az.loo` work on them.
"""

# %%
import argparse
from pathlib import Path

import arviz as az
import numpy as np
import pyro
from matplotlib.figure import Figure
from pyro.infer import SVI, RenyiELBO
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.guides import FutureGuide
from pyroseq.infer import ScaleLatents, warmup_factor
from pyroseq.models import DSSM
from pyroseq.predictive import plot_ppc, posterior_predictive, prior_predictive

parser = argparse.ArgumentParser(description="Predictive checks with ArviZ")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, as CI runs this page")
parser.add_argument("--out", type=Path, default=Path("docs/tutorials/img"), help="where the figures go")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

pyro.set_rng_seed(0)
pyro.clear_param_store()
STEPS, BATCH, D, K, S = (4, 16, 4, 2, 5) if args.smoke else (600, 128, 8, 4, 100)
corpus = load_words("sample") if args.smoke else load_words("symspell", top=10_000)
V = len(corpus.vocab)

# %% [markdown]
# ## A model to check
#
# The recipe of [the DSSM in ten minutes](01_dssm_in_ten_minutes.md), at a smaller state size and budget.

# %%
model = DSSM(vocab_size=V, state_dim=D, flow="triangular")
guide = FutureGuide(vocab_size=V, state_dim=D, flow="diagonal")
svi = SVI(
    model,
    guide,
    ClippedAdam({"lr": 3e-3, "clip_norm": 10.0}),
    RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1),
)
batches = corpus.sampler(BATCH, seed=0)
losses = []
for step in range(STEPS):
    batch = next(batches)
    with ScaleLatents(
        warmup_factor(step, STEPS // 2)
    ):  # KL warm-up over the first half, as pyroseq train does
        losses.append(svi.step(batch.ids, batch.mask) / len(batch))
print(f"-IWAE_{K}, mean of the last steps: {sum(losses[-20:]) / len(losses[-20:]):.3f} nats/word")
model.eval()
guide.eval()

# %% [markdown]
# ## Why not `Predictive(model, guide=guide)`?
#
# Pyro's `Predictive` runs the model with the arguments it is given, and an observed site keeps its
# observed value: called with the words, every "replicate" of a symbol is the symbol itself. pyroseq's
# `posterior_predictive` draws the states from the guide and then the symbols from the model's emission.
# Past a word's observed end (the guide knows nothing there) the states continue by the model's own
# transition, so a replicate longer than its word runs on the model's dynamics.

# %%
observed = corpus.draw_batch(8 if args.smoke else 200, seed=1)  # 200 words drawn from p(w)
posterior = posterior_predictive(model, guide, observed, num_samples=S)
prior = prior_predictive(model, observed, num_samples=S)
print(posterior.drawn)
words = [corpus.vocab.decode(row) for row in observed.ids[:6]]
replicates = posterior.words(corpus.vocab)  # S lists of B words
for b, word in enumerate(words):
    print(f"{word:>12s} -> {' '.join(replicates[s][b] for s in range(min(S, 6)))}")

# %% [markdown]
# ## ArviZ
#
# `to_inferencedata()` gives one chain of $S$ draws: `posterior_predictive` and `observed_data` hold the
# symbols `w` (dims `seq`, `step`) and the word length `length` (dim `seq`); the posterior's
# `log_likelihood` group holds $\log p(w_b \mid h^s)$ for every draw and observed word.

# %%
idata = posterior.to_inferencedata()
print(idata)
plot_ppc(idata, args.out / "03_ppc_length.png", var="length")

# %% [markdown]
# ![ArviZ's plot_ppc of the word length](img/03_ppc_length.png)
#
# Any statistic works the same way. Two here, for the posterior and the prior predictive alike: the mean
# word length of a replicated batch, with the posterior predictive p-value
# $P(\bar L^{\mathrm{rep}} \ge \bar L^{\mathrm{obs}})$, and the share of replicates that are words of the
# corpus.

# %%
known = set(corpus.words)
observed_length = idata.observed_data["length"].values.mean()
fig = Figure(figsize=(10, 3.6), layout="constrained")
ax_len, ax_real = fig.subplots(1, 2)
for label, draws in [("posterior predictive", posterior), ("prior predictive", prior)]:
    mean_length = draws.lengths().double().mean(-1).numpy()  # (S,): one mean per replicated batch
    real = np.array([np.mean([w in known for w in sample]) for sample in draws.words(corpus.vocab)])
    p_value = (mean_length >= observed_length).mean()
    print(
        f"{label:21s} mean length {mean_length.mean():.2f} (observed {observed_length:.2f}, "
        f"p = {p_value:.2f}); real words {real.mean():.0%}"
    )
    ax_len.hist(mean_length, bins=20, alpha=0.6, label=label)
    ax_real.hist(real, bins=20, alpha=0.6, label=label)
ax_len.axvline(observed_length, color="k", lw=2, label="observed")
ax_len.set(xlabel="mean word length of a replicated batch", ylabel="replicated batches")
ax_real.set(xlabel="share of replicates that are corpus words")
ax_len.legend(fontsize=8)
ax_real.legend(fontsize=8)
fig.savefig(args.out / "03_statistics.png", dpi=110)

# %% [markdown]
# ![Two test statistics, posterior and prior predictive](img/03_statistics.png)
#
# ## Leave-one-out
#
# The `log_likelihood` group makes ArviZ's Pareto-smoothed importance-sampling LOO run on the observed
# words. Here the draws are from the guide, not from an exact posterior, so read it as a diagnostic of how
# well $q(h \mid w)$ covers each word's posterior (large Pareto $k$: poorly), not as a model comparison.

# %%
loo = az.loo(idata, pointwise=True)
print(loo)
