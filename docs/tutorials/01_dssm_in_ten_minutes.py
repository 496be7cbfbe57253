"""# The DSSM in ten minutes

From a list of words to a trained deep state-space model (Schmidt & Hofmann, NeurIPS 2018) in plain Pyro:
the data, the model, the guide, stochastic variational inference, evaluation against the known distribution
of words, and samples. pyroseq supplies the model, the guide and the estimators; the training loop is
Pyro's own `SVI`, so everything here works the same way in your own scripts.
"""

# %%
import argparse
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure
from pyro.infer import SVI
from pyro.optim import ClippedAdam

from pyroseq.data.words import load_words
from pyroseq.decode import decode
from pyroseq.evaluate import elbo_and_iwae, prior_word_log_probs, word_metrics
from pyroseq.guides import FutureGuide
from pyroseq.infer import DReG, ScaleLatents, warmup_factor
from pyroseq.models import DSSM, init_emitter_bias

parser = argparse.ArgumentParser(description="The DSSM in ten minutes")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, as CI runs this page")
parser.add_argument("--out", type=Path, default=Path("docs/tutorials/img"), help="where the figures go")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

pyro.set_rng_seed(0)
pyro.clear_param_store()
STEPS, BATCH, D, K = (5, 16, 4, 2) if args.smoke else (1500, 128, 16, 4)
KS = (1, 2, 4) if args.smoke else (1, 10, 100)  # particles of the bounds in the evaluation

# %% [markdown]
# ## The data: words with a known distribution
#
# The task of the paper: model each word $w = (w_1, \dots, w_T)$, a sequence of characters ending in EOS,
# when the true distribution is known, $p(w) = \mathrm{count}(w) / \sum_v \mathrm{count}(v)$. The
# English frequency list shipped with `symspellpy` gives the counts; nothing is downloaded. Its entropy
# $H(p)$ is the floor of the cross-entropy any model can reach. (`--smoke` uses the 400-word sample kept in
# pyroseq instead.)

# %%
corpus = load_words("sample") if args.smoke else load_words("symspell", top=10_000)
print(f"{len(corpus)} words over {len(corpus.vocab)} symbols (PAD, BOS and EOS included)")
print(f"H(p) = {corpus.entropy_nats:.3f} nats/word, mean length {corpus.mean_length:.2f} symbols with EOS")

batch = corpus.draw_batch(3, seed=0)  # 3 words drawn from p(w), padded to the longest word of the corpus
print([corpus.vocab.decode(row) for row in batch.ids])
print(batch.ids)  # (B, T) symbol ids; EOS = 2, then PAD = 0
print(batch.mask)  # (B, T) True on real steps, EOS included

# %% [markdown]
# ## The model: a state that moves by a flow of white noise
#
# The DSSM's state $h_t \in \mathbb R^D$ never sees the words. It moves by a conditional normalising flow
# $f_G$ applied to white noise, and emits one symbol per step:
#
# $$
# \xi_t \sim \mathcal N(0, I_D), \qquad h_t = f_G(\xi_t; h_{t-1}), \qquad
# w_t \sim \mathrm{Categorical}(\mathrm{softmax}(g(h_t))),
# $$
#
# so that $p(h_t \mid h_{t-1}) = \mathcal N(f_G^{-1}(h_t; h_{t-1}); 0, I)\,
# \lvert\det \partial f_G^{-1} / \partial h_t\rvert$. `DSSM` is a `PyroModule` whose `forward(ids, mask)`
# is this Pyro model; `flow="triangular"` is the paper's $h = \mu(c) + L(c)\,\xi$ with a lower-triangular
# $L(c)$.
#
# The guide, $q(h_t \mid h_{t-1}, w_{t:T})$, reads the *future* of the word with a backward GRU and has a
# flow of its own; the data enter only through it. Model and guide take the same arguments.

# %%
V = len(corpus.vocab)
model = DSSM(vocab_size=V, state_dim=D, flow="triangular")
guide = FutureGuide(vocab_size=V, state_dim=D, flow="diagonal")
print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
print(f"guide: {sum(p.numel() for p in guide.parameters()):,} parameters")

# %% [markdown]
# ## Training: stochastic variational inference
#
# The importance-weighted bound with $K$ particles,
# $\mathrm{IWAE}_K = \mathbb E\big[\log \frac1K \sum_k p(w, h^k) / q(h^k \mid w)\big] \le \log q(w)$, is
# Pyro's `RenyiELBO(alpha=0)`; every site of pyroseq's models sits in the plate of sequences, so the bound
# is one per word. `svi.step` returns the loss summed over the batch: divide by the batch size for nats per
# word.
#
# The loop below is the recipe `pyroseq train --model dssm` uses (chosen by the lever screen of
# [results](../results.md) section (g)), written in plain Pyro, with fewer particles than the recipe's
# eight to keep the page quick:
#
# * `DReG(num_particles=K)`: the same bound and the same model gradient as `RenyiELBO(alpha=0)`, with
#   the doubly reparameterised guide gradient (Tucker et al. 2019), whose signal does not fade as $K$ grows;
# * a KL warm-up: `ScaleLatents(beta)` scales the state terms of the bound by `beta`, which
#   `warmup_factor` raises linearly to 1 over the first `WARMUP` steps. Without it the plain bound lets
#   the states collapse to the prior early on, and the model never learns to use them;
# * the emitter's output bias started at the symbols' log unigram frequencies (`init_emitter_bias`), so
#   that step 0 already predicts the letters at their rates;
# * Adam at 6e-3 with gradients clipped at norm 10, the rate decaying tenfold over the run (`lrd`).
#
# While the warm-up lasts, the loss printed and drawn is that of the scaled bound, below the true one.

# %%
WARMUP = STEPS // 3
init_emitter_bias(model, corpus.batch().ids, weights=torch.as_tensor(corpus.counts, dtype=torch.float64))
svi = SVI(
    model,
    guide,
    ClippedAdam({"lr": 6e-3, "clip_norm": 10.0, "lrd": 0.1 ** (1 / STEPS)}),
    DReG(num_particles=K),
)
batches = corpus.sampler(BATCH, seed=0)
losses = []
for step in range(STEPS):
    batch = next(batches)
    with ScaleLatents(warmup_factor(step, WARMUP)):
        losses.append(svi.step(batch.ids, batch.mask) / len(batch))
    if (step + 1) % max(1, STEPS // 5) == 0:
        print(f"step {step + 1:5d}   -IWAE_{K} {sum(losses[-50:]) / len(losses[-50:]):7.3f} nats/word")

# %%
fig = Figure(figsize=(6, 3.5), layout="constrained")
ax = fig.subplots()
ax.axvspan(0, WARMUP, color="0.92", label="KL warm-up (the scaled bound)")
ax.plot(range(1, STEPS + 1), losses, lw=0.6, alpha=0.5, label=f"-IWAE$_{K}$ per batch")
window = max(1, STEPS // 30)
smooth = torch.tensor(losses).unfold(0, window, 1).mean(-1)
ax.plot(range(window, STEPS + 1), smooth, label=f"mean of {window} steps")
ax.axhline(corpus.entropy_nats, color="k", ls="--", lw=1, label="H(p), the floor")
ax.set(xlabel="SVI step", ylabel="nats per word", ylim=(corpus.entropy_nats - 1, max(losses[:10]) + 1))
ax.legend()
fig.savefig(args.out / "01_training.png", dpi=110)

# %% [markdown]
# ![The training loss](img/01_training.png)
#
# ## Evaluation: how far is q from p?
#
# The sequence cross-entropy $\mathrm{CE} = -\sum_w p(w) \log q(w)$ (nats per word) is $H(p)$ plus
# $\mathrm{KL}(p \,\|\, q)$. $\log q(w)$ of a DSSM has no closed form; because its states never depend on
# the words, $K$ trajectories drawn once from the prior score every word of the vocabulary at once,
# $\log q(w) \approx \log \frac1K \sum_k \prod_t p(w_t \mid h^k_t)$ (biased upwards, less as $K$ grows:
# see [Evaluation](../evaluation.md)). The vocabulary mass $\sum_w q(w)$ is the probability the model puts
# on real words.

# %%
model.eval()
guide.eval()
estimate = prior_word_log_probs(
    model, corpus.encode(), num_samples=50 if args.smoke else 1000, progress=False
)
metrics = word_metrics(estimate, corpus.probs)
print(f"estimator: {estimate.estimator}, K = {estimate.num_samples} trajectories")
print(f"CE  = {metrics['ce_nats']:.3f} ± {metrics['ce_stderr']:.3f} nats/word")
print(f"KL  = {metrics['kl_nats']:.3f} nats/word")
print(f"vocabulary mass = {metrics['vocab_mass']:.3f}")

# %% [markdown]
# The bounds the guide gives on a batch of words: the ELBO and $\mathrm{IWAE}_K$ for growing $K$ must be
# ordered, $\mathrm{ELBO} \le \mathrm{IWAE}_{10} \le \mathrm{IWAE}_{100} \le \log q(w)$.

# %%
held_out = corpus.draw_batch(16 if args.smoke else 256, seed=1)
bounds = elbo_and_iwae(model, guide, held_out.ids, held_out.mask, ks=KS)
for name in ["elbo", *(f"iwae_{k}" for k in KS[1:])]:
    print(f"{name:9s} {bounds[name]:8.3f} ± {bounds[name + '_stderr']:.3f} nats/word")

# %% [markdown]
# ## Samples
#
# Generation needs no data: a trajectory is drawn from the prior and each step emits a symbol. The share of
# samples that are words of the corpus is a quick check of what the model learned.

# %%
samples = decode(model, num=20, max_length=corpus.max_length, decoder="ancestral", seed=0)
words = [corpus.vocab.decode(ids) for ids, _ in samples]
known = set(corpus.words)
print(" ".join(words))
print(f"{sum(w in known for w in words)} of {len(words)} samples are words of the corpus")
