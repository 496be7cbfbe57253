"""Predictive checks: replicated sequences from a model, as words and as an ArviZ ``InferenceData``.

* :func:`posterior_predictive` (models with latent states): for each observed sequence ``w``, draw
  ``h ~ q(h | w)`` from the guide and ``w_rep ~ p(w | h)`` from the model. The guide knows nothing of the
  steps after the observed end (it draws ``N(0, I)`` there, what the model puts there to keep every bound
  valid), so past the observed EOS the states continue by the model's own transition
  ``h_t ~ p(h_t | h_{t-1})``: a replicate longer than its word runs on the model's dynamics, not on
  untrained guide states. A model without latent states has no posterior: its posterior predictive is
  its prior predictive, and ``kind`` says so.
* :func:`prior_predictive`: sequences drawn from the model alone.

Why not ``Predictive(model, guide=guide)(ids, mask)``, the recipe of Pyro's docs? ``Predictive`` runs the
model with the arguments it is given, and a site with ``obs=`` keeps its observed value, so every
"replicate" of ``w_t`` is the data itself. Drawing needs the observations removed:
``Predictive(poutine.uncondition(model), guide=guide, num_samples=S, return_sites=["w_1", ...])``.

Both return :class:`PredictiveDraws`: the replicated ids cut at EOS, the words, and
:meth:`PredictiveDraws.to_inferencedata` with dims ``seq`` and ``step`` and, for the posterior, a
``log_likelihood`` group (``log p(w_b | h^s)`` per draw and sequence) so that ``az.loo`` and ``az.waic``
run.

Frames (polyphonic music) have their own: :func:`frame_predictive` replicates each observed sequence of
frames (:class:`FrameDraws`, with ``notes`` per frame and ``polyphony`` in its ``InferenceData``),
:func:`check_frames` compares notes per frame and polyphony with the data, and :func:`sample_frames` draws
from the model alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Predictive
from torch import Tensor

from pyroseq.data.batch import Batch, SequenceBatch, first_eos
from pyroseq.data.polyphonic import FrameBatch
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError
from pyroseq.models.base import SequenceModel, StateSpaceModel
from pyroseq.module import module_device

__all__ = [
    "PredictiveDraws",
    "posterior_predictive",
    "prior_predictive",
    "sequence_lengths",
    "check_words",
    "plot_ppc",
    "sample_frames",
    "FrameDraws",
    "frame_predictive",
    "check_frames",
]


@dataclass
class PredictiveDraws:
    """Replicated sequences: ``S`` draws for each of ``B`` observed sequences.

    Attributes:
        kind: ``"posterior"`` or ``"prior"``: what the latent states were drawn from.
        drawn: a sentence saying how the replicates were drawn.
        ids: ``(S, B, T)`` long; each replicate cut at its first EOS (PAD after it).
        observed: the observed batch the replicates are compared with.
        states: ``(S, B, T, D)``, the posterior draws of the states (observed steps from the guide, the
            rest continued by the model's transition); ``None`` for the prior predictive.
        log_likelihood: ``(S, B)`` float64, ``log p(w_b | h^s)`` of each observed sequence under each
            posterior draw of its states; ``None`` for the prior predictive.
    """

    kind: str
    drawn: str
    ids: Tensor
    observed: Batch
    states: Tensor | None = None
    log_likelihood: Tensor | None = None

    def words(self, vocab: Vocabulary) -> list[list[str]]:
        """The replicates as text: ``S`` lists of ``B`` words."""
        return [[vocab.decode(row) for row in sample] for sample in self.ids.cpu()]

    def lengths(self) -> Tensor:
        """Symbols before the first EOS of each replicate, ``(S, B)``."""
        return sequence_lengths(self.ids)

    def to_inferencedata(self) -> Any:
        """An ``arviz.InferenceData`` of one chain of ``S`` draws.

        ``posterior_predictive`` holds ``w`` (dims ``seq``, ``step``) and ``length`` (``seq``);
        ``observed_data`` the same of the observed batch. For the posterior, ``posterior`` holds the
        states ``h`` (``seq``, ``step``, ``state``) and ``log_likelihood`` holds ``word``, the
        log-likelihood of each observed sequence (``seq``), for ``az.loo`` and ``az.waic``.
        """
        import arviz as az

        observed = self.observed
        groups: dict[str, Any] = {
            "posterior_predictive": {
                "w": self.ids.cpu().numpy()[None],
                "length": self.lengths().cpu().numpy()[None],
            },
            "observed_data": {
                "w": observed.ids.masked_fill(~observed.mask, Vocabulary.pad_id).cpu().numpy(),
                "length": sequence_lengths(observed.ids, observed.mask).cpu().numpy(),
            },
        }
        if self.states is not None and self.log_likelihood is not None:
            groups["posterior"] = {"h": self.states.cpu().numpy()[None]}
            groups["log_likelihood"] = {"word": self.log_likelihood.cpu().numpy()[None]}
        dims = {"w": ["seq", "step"], "length": ["seq"], "word": ["seq"], "h": ["seq", "step", "state"]}
        return az.from_dict(**groups, dims=dims)


def _cut_at_eos(ids: Tensor) -> Tensor:
    """PAD after each row's first EOS (the EOS kept), ``ids.shape``."""
    after = torch.arange(ids.shape[-1], device=ids.device) > first_eos(ids)[..., None]  # (..., T)
    return ids.masked_fill(after, Vocabulary.pad_id)


def _check_samples(num_samples: int) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")


@torch.no_grad()
def prior_predictive(model: SequenceModel, batch: Batch, *, num_samples: int) -> PredictiveDraws:
    """``num_samples`` sequences per observed one drawn from the model alone, ``T`` steps at most.

    Args:
        model: a pyroseq model.
        batch: the observed sequences: they fix ``B`` and ``T`` and are what the draws are compared with.
        num_samples: S draws per observed sequence.
    """
    _check_samples(num_samples)
    T = batch.ids.shape[1]
    sites = [f"w_{t}" for t in range(1, T + 1)]
    samples = Predictive(model, num_samples=num_samples, return_sites=sites)(
        None, torch.ones_like(batch.mask)
    )
    ids = torch.stack([samples[site] for site in sites], dim=-1)  # (S, B, T)
    return PredictiveDraws("prior", "sequences drawn from the model alone", _cut_at_eos(ids), batch)


@torch.no_grad()
def posterior_predictive(
    model: SequenceModel, guide: Callable[..., Any] | None, batch: Batch, *, num_samples: int
) -> PredictiveDraws:
    """``num_samples`` replicates of each observed sequence, and its log-likelihood under each draw.

    For a state-space model: ``h ~ q(h | w)`` from the guide on the observed steps, the model's
    transition after the observed end, and ``w_rep_t ~ p(w_t | h_t)`` at every step (see the module
    docstring). For an autoregressive model (no latent states) this is its prior predictive
    (``kind="prior"``, no states and no log-likelihood).

    Args:
        model: a pyroseq model.
        guide: its guide (the DSSM's draws the trajectory site ``"h"``); unused without latent states.
        batch: the observed sequences.
        num_samples: S replicates per observed sequence.

    Raises:
        ConfigError: a state-space model without a guide (use :func:`prior_predictive`), or a guide that
            does not draw the site ``"h"``.
    """
    _check_samples(num_samples)
    if not isinstance(model, StateSpaceModel):
        draws = prior_predictive(model, batch, num_samples=num_samples)
        draws.drawn = "the model has no latent states: its posterior predictive is its prior predictive"
        return draws
    model.require_symbols("posterior_predictive")
    B, T = batch.mask.shape
    states = _posterior_states(model, guide, batch, num_samples)  # (S, B, T, D)
    logits = model.emission_logits(states)  # (S, B, T, V)
    ids = dist.Categorical(logits=logits).sample()  # (S, B, T)
    observed = batch.ids.expand(num_samples, B, T).unsqueeze(-1)  # (S, B, T, 1)
    log_p = torch.log_softmax(logits.double(), dim=-1).gather(-1, observed).squeeze(-1)  # (S, B, T)
    log_likelihood = log_p.masked_fill(~batch.mask, 0.0).sum(-1)  # (S, B)
    drawn = "states from the guide on the observed steps, from the model's transition after the observed end"
    return PredictiveDraws("posterior", drawn, _cut_at_eos(ids), batch, states, log_likelihood)


def _posterior_states(
    model: StateSpaceModel, guide: Callable[..., Any] | None, batch: SequenceBatch, num_samples: int
) -> Tensor:
    """S draws of each sequence's states ``(S, B, T, D)``: the guide's on the observed steps, the model's
    own transition after the observed end."""
    if guide is None:
        raise ConfigError(
            "a posterior predictive needs the guide that conditions the states on each sequence; "
            "without one, use prior_predictive"
        )
    with pyro.plate("draws", num_samples, dim=-2):  # where vectorised particles put theirs
        trace = poutine.trace(guide).get_trace(batch.observations, batch.mask)
    if "h" not in trace.nodes:
        name = getattr(guide, "__name__", type(guide).__name__)
        raise ConfigError(f"the guide {name} does not draw the DSSM's state trajectory site 'h'")
    B, T = batch.mask.shape
    guided = trace.nodes["h"]["value"]  # (S, B, T, D)
    guided = guided.expand(num_samples, B, T, guided.shape[-1])
    h = model.initial_state((num_samples, B))  # (S, B, D)
    states = []
    for t in range(T):
        # the guide's state on observed steps; past the observed end, the model's own transition
        h = torch.where(batch.mask[:, t, None], guided[:, :, t], model.transition(h).sample())  # (S, B, D)
        states.append(h)
    return torch.stack(states, dim=-2)  # (S, B, T, D)


@dataclass
class FrameDraws:
    """Replicated sequences of frames: ``S`` draws for each of ``B`` observed sequences, each as long as
    the sequence it replicates.

    Attributes:
        kind: ``"posterior"`` or ``"prior"``.
        drawn: a sentence saying how the replicates were drawn.
        frames: ``(S, B, T, F)`` 0/1; zeros after each observed sequence's end.
        observed: the observed batch.
        states: ``(S, B, T, D)`` posterior draws of the states; ``None`` for the prior predictive.
        log_likelihood: ``(S, B)`` float64, ``log p(x_b | h^s)``; ``None`` for the prior predictive.
    """

    kind: str
    drawn: str
    frames: Tensor
    observed: FrameBatch
    states: Tensor | None = None
    log_likelihood: Tensor | None = None

    def notes(self) -> Tensor:
        """Notes sounding in each replicated frame, ``(S, B, T)`` (0 after each sequence's end)."""
        return self.frames.sum(-1)

    def to_inferencedata(self) -> Any:
        """An ``arviz.InferenceData`` of one chain of ``S`` draws: ``posterior_predictive`` and
        ``observed_data`` hold ``notes`` (notes in each real frame, dim ``frame``: the batch's real frames,
        sequence after sequence) and ``polyphony`` (each sequence's most notes in a frame, ``seq``); for the
        posterior, ``posterior`` holds the states ``h`` and ``log_likelihood`` holds ``sequence``, the
        log-likelihood of each observed sequence, for ``az.loo`` and ``az.waic``."""
        import arviz as az

        mask = self.observed.mask.cpu()
        observed_notes = self.observed.frames.sum(-1).cpu()  # (B, T)
        notes = self.notes().cpu()  # (S, B, T)
        groups: dict[str, Any] = {
            "posterior_predictive": {
                "notes": notes[:, mask].numpy()[None],  # (1, S, frames)
                "polyphony": notes.amax(-1).numpy()[None],
            },
            "observed_data": {
                "notes": observed_notes[mask].numpy(),
                "polyphony": observed_notes.amax(-1).numpy(),
            },
        }
        if self.states is not None and self.log_likelihood is not None:
            groups["posterior"] = {"h": self.states.cpu().numpy()[None]}
            groups["log_likelihood"] = {"sequence": self.log_likelihood.cpu().numpy()[None]}
        dims = {"notes": ["frame"], "polyphony": ["seq"], "sequence": ["seq"], "h": ["seq", "step", "state"]}
        return az.from_dict(**groups, dims=dims)


@torch.no_grad()
def frame_predictive(
    model: SequenceModel,
    guide: Callable[..., Any] | None,
    batch: FrameBatch,
    *,
    num_samples: int,
    posterior: bool = True,
) -> FrameDraws:
    """``num_samples`` replicates of each observed sequence of frames, as long as it.

    The posterior predictive of a state-space model draws ``h ~ q(h | x)`` from the guide and
    ``x_rep_t ~ p(x_t | h_t)``, with the log-likelihood ``log p(x | h)`` of each draw; a model without
    latent states (the RNN) has no posterior, and its posterior predictive is its prior predictive. The
    prior predictive runs the model with no observations (an RNN fed its own previous frames).

    Args:
        model: a model of frames.
        guide: its guide (the DSSM's draws the site ``"h"``); unused for the prior predictive.
        batch: the observed sequences.
        num_samples: S replicates per observed sequence.
        posterior: the posterior predictive (default) or the prior predictive.
    """
    _check_samples(num_samples)
    if model.emits_symbols:
        raise ConfigError(
            f"frame_predictive replicates frames, but this {type(model).__name__} emits symbols: use "
            "posterior_predictive",
            params=("model",),
        )
    frames, mask = model.checked_inputs(batch.frames, batch.mask)
    real = mask[..., None]  # (B, T, 1)
    if posterior and isinstance(model, StateSpaceModel):
        states = _posterior_states(model, guide, batch, num_samples)  # (S, B, T, D)
        law = model.emitter.distribution(states)  # batch (S, B, T)
        log_likelihood = law.log_prob(frames).double().masked_fill(~mask, 0.0).sum(-1)  # (S, B)
        drawn = "states from the guide, frames from the model's emission"
        return FrameDraws("posterior", drawn, law.sample() * real, batch, states, log_likelihood)
    sites = [f"w_{t}" for t in range(1, mask.shape[1] + 1)]
    samples = Predictive(model, num_samples=num_samples, return_sites=sites)(None, mask)
    replicated = torch.stack([samples[site] for site in sites], dim=2) * real  # (S, B, T, F)
    drawn = (
        "sequences drawn from the model alone"
        if not posterior
        else "the model has no latent states: its posterior predictive is its prior predictive"
    )
    return FrameDraws("prior", drawn, replicated, batch)


def check_frames(
    model: SequenceModel,
    guide: Callable[..., Any] | None,
    batch: FrameBatch,
    *,
    num_samples: int = 20,
    posterior: bool = True,
) -> tuple[dict[str, Any], Any]:
    """A predictive check of notes per frame and polyphony (the most notes sounding together in a
    sequence).

    Returns:
        ``(summary, idata)``: the summary holds ``kind``, ``drawn``, the observed and replicated mean
        notes per frame (over real frames) and mean polyphony (over sequences), with the posterior
        predictive p-values ``P(statistic of a replicate batch >= observed)``; ``idata`` is
        :meth:`FrameDraws.to_inferencedata`.

    Example:
        >>> from pyroseq.data.polyphonic import pad_frames
        >>> from pyroseq.guides import FutureGuide
        >>> from pyroseq.models import DSSM
        >>> model = DSSM(emission="bernoulli", obs_dim=88, state_dim=4, flow="diagonal")
        >>> batch = pad_frames([torch.zeros(3, 88), torch.ones(2, 88)])
        >>> summary, idata = check_frames(model, FutureGuide(obs_dim=88, state_dim=4), batch, num_samples=5)
        >>> summary["observed_mean_notes"], summary["observed_mean_polyphony"], summary["kind"]
        (35.2, 44.0, 'posterior')
    """
    draws = frame_predictive(model, guide, batch, num_samples=num_samples, posterior=posterior)
    mask = batch.mask
    observed_notes = batch.frames.sum(-1)  # (B, T)
    notes = draws.notes()  # (S, B, T)
    replicated_mean = (notes * mask).sum((-1, -2)) / mask.sum()  # (S,)
    replicated_polyphony = notes.amax(-1).double().mean(-1)  # (S,)
    observed_mean = float(observed_notes[mask].double().mean())
    observed_polyphony = float(observed_notes.amax(-1).double().mean())
    summary = {
        "kind": draws.kind,
        "drawn": draws.drawn,
        "num_sequences": len(batch),
        "num_frames": batch.num_frames,
        "num_samples": num_samples,
        "observed_mean_notes": observed_mean,
        "replicated_mean_notes": float(replicated_mean.mean()),
        "replicated_mean_notes_sd": float(replicated_mean.std()) if num_samples > 1 else 0.0,
        "p_value_mean_notes": float((replicated_mean >= observed_mean).double().mean()),
        "observed_mean_polyphony": observed_polyphony,
        "replicated_mean_polyphony": float(replicated_polyphony.mean()),
        "p_value_polyphony": float((replicated_polyphony >= observed_polyphony).double().mean()),
    }
    return summary, draws.to_inferencedata()


@torch.no_grad()
def sample_frames(model: SequenceModel, *, num: int, length: int) -> Tensor:
    """``num`` sequences of ``length`` frames drawn from a model of frames alone, ``(num, length, F)``:
    the model run with no observations (a DSSM along a trajectory from its transition, an RNN fed its own
    previous frame).

    Example:
        >>> from pyroseq.models import DSSM
        >>> model = DSSM(emission="bernoulli", obs_dim=88, state_dim=4, flow="diagonal")
        >>> sample_frames(model, num=2, length=16).shape
        torch.Size([2, 16, 88])
    """
    _check_samples(num)
    _check_samples(length)
    if model.emits_symbols:
        raise ConfigError(
            f"sample_frames draws frames, but this {type(model).__name__} emits symbols: use "
            "pyroseq.decode.decode",
            params=("model",),
        )
    sites = [f"w_{t}" for t in range(1, length + 1)]
    mask = torch.ones(num, length, dtype=torch.bool, device=module_device(model))
    drawn = Predictive(model, num_samples=1, return_sites=sites)(None, mask)
    return torch.stack([drawn[site][0] for site in sites], dim=1)  # (num, T, F)


def sequence_lengths(ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """Symbols before the first EOS (the word length), ``ids.shape[:-1]``; the full length if none.

    With ``mask``, steps outside it count as ended.
    """
    return first_eos(ids, mask)


def check_words(
    model: SequenceModel,
    guide: Callable[..., Any] | None,
    batch: Batch,
    vocab: Vocabulary,
    words: Sequence[str],
    *,
    num_samples: int = 20,
    posterior: bool = True,
) -> tuple[dict[str, Any], Any]:
    """A predictive check of word lengths and of how many replicates are words of the corpus.

    Returns:
        ``(summary, idata)``: the summary holds ``kind`` and ``drawn`` (what the replicates were drawn
        from), the observed and replicated mean length, the posterior predictive p-value
        ``P(mean length of a replicate batch >= observed)``, and the fraction of replicates that are
        words of ``words``; ``idata`` is :meth:`PredictiveDraws.to_inferencedata`.
    """
    if posterior:
        draws = posterior_predictive(model, guide, batch, num_samples=num_samples)
    else:
        draws = prior_predictive(model, batch, num_samples=num_samples)
    rep_len = draws.lengths().cpu().numpy()  # (S, B)
    obs_len = sequence_lengths(batch.ids, batch.mask).cpu().numpy()  # (B,)
    known = set(words)
    texts = draws.words(vocab)
    in_vocab = np.array([[t in known for t in sample] for sample in texts])
    summary = {
        "kind": draws.kind,
        "drawn": draws.drawn,
        "num_sequences": int(obs_len.shape[0]),
        "num_samples": num_samples,
        "observed_mean_length": float(obs_len.mean()),
        "replicated_mean_length": float(rep_len.mean()),
        "replicated_mean_length_sd": float(rep_len.mean(axis=1).std()),
        "p_value_mean_length": float((rep_len.mean(axis=1) >= obs_len.mean()).mean()),
        "in_vocabulary_fraction": float(in_vocab.mean()),
        "examples": texts[0][:10],
    }
    return summary, draws.to_inferencedata()


def plot_ppc(idata: Any, path: str | Path, *, var: str = "length") -> Path:
    """ArviZ's posterior predictive plot of ``var`` saved as a PNG.

    Draws on matplotlib's object-oriented Agg canvas, so it needs no display and leaves the caller's
    backend and pyplot's figures alone.
    """
    import arviz as az
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    num_pp_samples = min(50, idata.posterior_predictive.sizes["draw"])
    az.plot_ppc(idata, var_names=[var], num_pp_samples=num_pp_samples, ax=fig.subplots())
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
