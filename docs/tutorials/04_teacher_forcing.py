r"""# Teacher forcing, scheduled sampling and professor forcing, side by side

A recurrent language model factorises $q(w) = \prod_t q(w_t \mid w_{<t})$ and is trained with **teacher
forcing**: the true previous symbol is fed in at every step. It generates by feeding back its own samples,
a mismatch known as exposure bias. **Scheduled sampling** (Bengio et al., 2015) feeds the model's own sample
with a probability that grows during training; **professor forcing** (Lamb et al., 2016) trains a
discriminator to tell teacher-forced from free-running behaviour and the generator to fool it. This page
trains all three on the same words, with the same budget, and measures each against the known $p(w)$.
"""

# %%
import argparse
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure

from pyroseq.data.words import load_words
from pyroseq.decode import decode
from pyroseq.evaluate import exact_word_log_probs, word_metrics
from pyroseq.guides import empty_guide
from pyroseq.infer import Trainer
from pyroseq.models import RNNLM, ProfessorForcing
from pyroseq.models.schedules import TeacherSchedule

parser = argparse.ArgumentParser(description="Teacher forcing, scheduled sampling and professor forcing")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, as CI runs this page")
parser.add_argument("--out", type=Path, default=Path("docs/tutorials/img"), help="where the figures go")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

STEPS, BATCH, H = (6, 16, 8) if args.smoke else (1500, 128, 32)
corpus = load_words("sample") if args.smoke else load_words("symspell", top=10_000)
V = len(corpus.vocab)

# %% [markdown]
# ## Three models, one interface
#
# Each is a Pyro model with observed sites only, so the guide is empty and SVI with `Trace_ELBO` is exact
# maximum likelihood. Scheduled sampling is `RNNLM` with a teacher schedule: at training step $i$ each step
# feeds the true symbol with probability $\epsilon_i$, here the inverse-sigmoid decay
# $\epsilon_i = k / (k + e^{i/k})$ with $k$ a tenth of the steps.

# %%
schedule = {"kind": "invsigmoid", "k": max(1, STEPS // 10)}
print(
    [round(TeacherSchedule.from_dict(schedule).teacher_prob(i), 3) for i in range(0, STEPS + 1, STEPS // 5)]
)

models = {
    "teacher forcing": lambda: RNNLM(vocab_size=V, state_dim=H),
    "scheduled sampling": lambda: RNNLM(vocab_size=V, state_dim=H, schedule=schedule),
    "professor forcing": lambda: ProfessorForcing(vocab_size=V, state_dim=H),
}

# %% [markdown]
# ## Training
#
# Scheduled sampling and professor forcing carry state that must advance with the training step (the
# teacher probability; the discriminator, with its own optimiser), in the model's `train_hook(step, batch)`.
# Under plain Pyro `SVI` the models call it themselves when they see that an optimiser has stepped;
# pyroseq's `Trainer`, used here, calls it before every step and returns the loss per word together with
# what the hook reported (`teacher_prob`, `disc_accuracy`).

# %%
runs = {}
for label, make_model in models.items():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = make_model()
    trainer = Trainer(model, empty_guide, objective="elbo", lr=3e-3, total_steps=STEPS)
    batches = corpus.sampler(BATCH, seed=0)  # the same words, in the same order, for every model
    history = [trainer.step(next(batches)) for _ in range(STEPS)]
    runs[label] = (model, history)
    last = history[-1]
    extra = {k: round(v, 3) for k, v in last.items() if k in ("teacher_prob", "disc_accuracy")}
    print(f"{label:20s} loss at the last step {last['loss']:.3f} nats/word {extra}")

# %% [markdown]
# ## Measured against p(w)
#
# For an autoregressive model $\log q(w)$ is exact: one teacher-forced pass over the words' prefix tree
# scores the whole vocabulary. Evaluation is always teacher-forced, whatever the training. The samples are
# free-running (ancestral), which is where exposure bias would show.

# %%
known = set(corpus.words)
table = {}
for label, (model, _) in runs.items():
    model.eval()
    metrics = word_metrics(exact_word_log_probs(model, corpus.encode()), corpus.probs)
    samples = decode(model, num=200, max_length=corpus.max_length, decoder="ancestral", seed=0)
    real = sum(corpus.vocab.decode(ids) in known for ids, _ in samples) / len(samples)
    table[label] = (metrics["ce_nats"], metrics["kl_nats"], metrics["vocab_mass"], real)
print(f"H(p) = {corpus.entropy_nats:.3f} nats/word")
print(f"{'':20s} {'CE':>7s} {'KL':>7s} {'mass':>6s} {'real words':>10s}")
for label, (ce, kl, mass, real) in table.items():
    print(f"{label:20s} {ce:7.3f} {kl:7.3f} {mass:6.3f} {real:10.0%}")

# %%
fig = Figure(figsize=(10, 3.6), layout="constrained")
ax_loss, ax_hook = fig.subplots(1, 2)
window = max(1, STEPS // 30)
for label, (_, history) in runs.items():
    loss = torch.tensor([h["loss"] for h in history])
    ax_loss.plot(range(window, STEPS + 1), loss.unfold(0, window, 1).mean(-1), label=label)
ax_loss.axhline(corpus.entropy_nats, color="k", ls="--", lw=1, label="H(p)")
ax_loss.set(xlabel="training step", ylabel="training loss, nats/word", title="the loss each one minimises")
ax_loss.legend(fontsize=8)
ax_hook.plot([h["teacher_prob"] for h in runs["scheduled sampling"][1]], label="teacher probability")
ax_hook.plot(
    [h["disc_accuracy"] for h in runs["professor forcing"][1]], lw=0.6, label="discriminator accuracy"
)
ax_hook.axhspan(0.75, 0.99, color="grey", alpha=0.15, label="adversarial term on")
ax_hook.set(xlabel="training step", ylim=(0, 1.02), title="what the train hooks advanced")
ax_hook.legend(fontsize=8)
fig.savefig(args.out / "04_teacher_forcing.png", dpi=110)

# %% [markdown]
# ![Training loss and the hooks' state](img/04_teacher_forcing.png)
#
# The training losses are not comparable with each other: scheduled sampling's is the likelihood of the
# words given partly its own samples, and professor forcing adds the adversarial term. The table above is
# the comparison: the same teacher-forced cross-entropy for all three. The longer runs on
# [Results](../results.md) (5,000 steps, state sizes 8 and 16) found both variants cost likelihood.
