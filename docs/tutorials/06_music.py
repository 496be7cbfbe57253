r"""# A DSSM on polyphonic music: the JSB chorales

The DSSM does not care what it emits. With the **Bernoulli emission** each step emits a frame of a piano
roll, 88 keys each on or off given the state, $p(x_t \mid h_t) = \prod_k \mathrm{Bernoulli}(x_{t,k};
\sigma(g(h_t))_k)$, and the future-conditioned guide reads the frames instead of symbols. This is the
setting of Krishnan, Shalit & Sontag's Deep Markov Model (AAAI 2017), Pyro's `examples/dmm.py`, on the
JSB chorales of Boulanger-Lewandowski et al. (ICML 2012). This page trains a small DSSM on them, scores it
as Pyro's example does (NLL per frame), draws a chorale and shows it as a piano roll, and checks the notes
per frame and the polyphony of its replicates against the data.

Nothing is downloaded: the file is `polyphonic/jsb_chorales.pickle` of Pyro's datasets repository
([github.com/pyro-ppl/datasets](https://github.com/pyro-ppl/datasets)), the one Pyro's own loader fetches;
pass it with `--file`.
"""

# %%
import argparse
import pickle
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure

import pyroseq
from pyroseq.data.polyphonic import LOWEST_PITCH, load_polyphonic, roll_pitches
from pyroseq.evaluate import frame_nll
from pyroseq.evaluate.frames import frame_prediction
from pyroseq.guides import FutureGuide
from pyroseq.infer import Trainer
from pyroseq.models import DSSM
from pyroseq.predictive import check_frames, plot_ppc, sample_frames

parser = argparse.ArgumentParser(description="A DSSM on polyphonic music")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, as CI runs this page")
parser.add_argument("--out", type=Path, default=Path("docs/tutorials/img"), help="where the figures go")
parser.add_argument("--file", type=Path, help="jsb_chorales.pickle [default: the project's shared copy]")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

STEPS, BATCH, D, H, K, N = (4, 4, 4, 8, 3, 5) if args.smoke else (300, 20, 16, 64, 20, 100)
shared = [p / "shared" / "data" / "jsb_chorales.pickle" for p in Path(pyroseq.__file__).resolve().parents]
path = args.file or next((p for p in shared if p.is_file()), None)
if args.smoke and args.file is None:  # tests need no copy of the file: a tiny stand-in of the same layout
    g = torch.Generator().manual_seed(0)
    notes = [[int(p) for p in 48 + torch.randperm(30, generator=g)[: 1 + t % 4]] for t in range(19)]
    chorales = [notes[:8], notes[8:14], notes[14:]]
    path = args.out / "stand_in.pickle"
    path.write_bytes(
        pickle.dumps({split: [list(map(tuple, c)) for c in chorales] for split in ("train", "valid", "test")})
    )
corpus = load_polyphonic(path)
for name in ("train", "valid", "test"):
    s = corpus.split(name).stats()
    notes_per_frame = s["mean_notes_per_frame"]
    print(
        f"{name:5s} {s['sequences']:3d} chorales, {s['frames']:5d} frames, {notes_per_frame:.2f} notes/frame"
    )

# %% [markdown]
# ## The model and its guide
#
# A DSSM of frames takes `emission="bernoulli"` and `obs_dim=88` instead of a vocabulary; its guide takes
# `obs_dim=88` too and reads each frame through a linear map into its backward GRU. A batch of the corpus is
# a `FrameBatch`: `frames (B, T, 88)` and `mask (B, T)`, padded to the split's longest chorale, and the
# model and guide are called with them as they are called with `(ids, mask)` on words. pyroseq's `Trainer`
# runs the SVI steps (Adam, clipping, a decaying learning rate, the KL term warmed up over the first quarter);
# `SVI(model, guide, optim, Trace_ELBO()).step(batch.frames, batch.mask)` works the same way.

# %%
pyro.set_rng_seed(0)
pyro.clear_param_store()
model = DSSM(emission="bernoulli", obs_dim=88, state_dim=D, flow="gated", flow_hidden=H, emitter_hidden=H)
guide = FutureGuide(obs_dim=88, state_dim=D, flow=None, embed_dim=H, rnn_hidden=H)
trainer = Trainer(model, guide, lr=3e-3, total_steps=STEPS, kl_warmup=STEPS // 4)
batches = corpus.train.sampler(BATCH, seed=0)
losses = []
for _ in range(STEPS):
    batch = next(batches)
    losses.append(trainer.step(batch)["loss"] * len(batch) / batch.num_frames)  # -ELBO per frame, once warm
last = losses[-20:]
print(
    f"-ELBO per frame: first step {losses[0]:.2f}, mean of the last {len(last)} {sum(last) / len(last):.2f}"
)
model.eval()
guide.eval()

# %% [markdown]
# The transition here is the `gated` flow, Krishnan's gated transition, and the guide has no flow: that is
# the DMM's structure at a small size. The DMM at Pyro's example's sizes (state 100, transition 200,
# emission 100, guide RNN 600) is a preset of the command line:
#
#     pyroseq train --preset dmm --file jsb_chorales.pickle --steps 50000 --out runs/dmm
#     pyroseq evaluate runs/dmm
#
# ## NLL per frame
#
# Pyro's example reports the test NLL per time step: minus the ELBO summed over the test chorales, divided
# by their number of frames. `frame_nll` gives it, and from $K$ guide particles the tighter IWAE bound, each
# with a standard error. Pyro's DMM reaches 6.87 nats per frame after 5,000 epochs; a model this small and
# this briefly trained is far from that, and far from the 88 log 2 = 61 nats of a model that knows nothing.
# A secondary figure: how often the most likely next frame (each key on where its predictive probability
# exceeds 0.5, by a particle filter) gets the keys right, as the frame-level accuracy and F1.

# %%
torch.manual_seed(0)
test = corpus.test.batch()  # every test chorale, in one batch
nll = frame_nll(model, guide, [test], num_particles=K)
print(f"test: ELBO {nll['nll_elbo']:.3f} ± {nll['nll_elbo_stderr']:.3f}, IWAE_{K} {nll[f'nll_iwae_{K}']:.3f} "
      f"± {nll[f'nll_iwae_{K}_stderr']:.3f} nats per frame over {nll['num_frames']} frames")  # fmt: skip
scores = frame_prediction(model, [test], num_particles=N)
print(f"next frame: accuracy {scores['accuracy']:.3f}, F1 {scores['f1']:.3f}")

# %% [markdown]
# At this size and budget the next-frame scores are 0: the model spreads about four notes' worth of
# probability over the keys it has seen sound, and no key reaches 0.5 before it is played; the scores
# separate models that predict the harmony, not this one.
#
# ## A chorale from the model
#
# `sample_frames` runs the model with no observations: states from the transition, frames from the
# emission. Shown as a piano roll beside a chorale of the test split (time runs left to right, pitch
# upwards); `roll_pitches` turns a roll back into the MIDI pitches of each frame.

# %%
torch.manual_seed(1)
length = int(corpus.train.lengths.median())
drawn = sample_frames(model, num=1, length=length)[0]  # (T, 88)
real = corpus.test.rolls[0]
print("drawn, first frames:", roll_pitches(drawn)[:4])
print("real,  first frames:", roll_pitches(real)[:4])
fig = Figure(figsize=(10, 3.4), layout="constrained")
shown = [("drawn", drawn), ("a test chorale", real)]
for ax, (title, roll) in zip(fig.subplots(1, 2, sharey=True), shown, strict=True):
    ax.imshow(roll.T, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest",
              extent=(0, len(roll), LOWEST_PITCH - 0.5, LOWEST_PITCH + 87.5))  # fmt: skip
    ax.set(title=title, xlabel="frame", ylim=(40, 100))
fig.axes[0].set_ylabel("MIDI pitch")
fig.savefig(args.out / "06_piano_roll.png", dpi=110)

# %% [markdown]
# ![A drawn chorale and a real one as piano rolls](img/06_piano_roll.png)
#
# ## Predictive checks: notes per frame and polyphony
#
# `check_frames` draws replicates of each observed chorale (states from the guide, frames from the
# emission) and compares two statistics with the data: the mean number of notes per frame and the
# polyphony (the most notes sounding together, averaged over chorales), with posterior predictive
# p-values. The draws come back as an ArviZ `InferenceData` whose `notes` hold the notes of every real
# frame, for ArviZ's own plot.

# %%
observed = corpus.test.batch(range(min(20, len(corpus.test))))
summary, idata = check_frames(model, guide, observed, num_samples=K)
print(f"notes per frame: observed {summary['observed_mean_notes']:.2f}, replicated "
      f"{summary['replicated_mean_notes']:.2f} (p = {summary['p_value_mean_notes']:.2f})")  # fmt: skip
print(f"polyphony: observed {summary['observed_mean_polyphony']:.2f}, replicated "
      f"{summary['replicated_mean_polyphony']:.2f} (p = {summary['p_value_polyphony']:.2f})")  # fmt: skip
plot_ppc(idata, args.out / "06_ppc_notes.png", var="notes")

# %% [markdown]
# ![ArviZ's plot_ppc of the notes per frame](img/06_ppc_notes.png)
#
# The same from the command line, on a run directory: `pyroseq check runs/dmm` (and `pyroseq sample
# runs/dmm -n 3`, which prints each frame's pitches).
