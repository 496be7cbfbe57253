"""Predictive checks: draw sequences with Pyro's ``Predictive`` and compare them with data in ArviZ.

* **Posterior predictive** (models with latent states): for each observed sequence ``w``, draw
  ``h ~ q(h | w)`` from the guide and ``w_rep ~ p(w | h)`` from the model. Pyro's ``Predictive`` echoes
  observed values at ``obs=`` sites, so the model runs under ``poutine.uncondition`` to draw them.
* **Prior predictive**: sequences drawn from the model alone (``ids=None``); for a model without
  latent variables this is also its posterior predictive.

Replicates are summarised per sequence (length, first symbol, whether it is a word of the corpus) and
turned into an ``arviz.InferenceData`` (one chain) so that ArviZ's plots and statistics apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer import Predictive
from torch import Tensor

from pyroseq.data.batch import Batch
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError
from pyroseq.models.base import SequenceModel

__all__ = ["draw", "sequence_lengths", "to_inferencedata", "check_words", "plot_ppc"]


def _stack(samples: dict[str, Tensor], length: int) -> Tensor:
    return torch.stack([samples[f"w_{t}"] for t in range(1, length + 1)], dim=-1)  # (S, B, T)


@torch.no_grad()
def draw(
    model: SequenceModel,
    guide: Callable[..., Any] | None,
    batch: Batch,
    *,
    num_samples: int,
    posterior: bool = True,
) -> Tensor:
    """Replicated symbol ids, ``(S, B, T)``.

    Args:
        model: a pyroseq model.
        guide: its guide; used when ``posterior`` and the model has latent states.
        batch: the observed sequences (``B`` of them, ``T`` steps).
        num_samples: S replicates per sequence.
        posterior: condition the latent states on each observed sequence through the guide; otherwise
            (or for a model without latent states) draw from the prior with the batch's shape.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    T = batch.ids.shape[1]
    sites = [f"w_{t}" for t in range(1, T + 1)]
    if posterior and not model.autoregressive and guide is not None:
        predictive = Predictive(
            poutine.uncondition(model), guide=guide, num_samples=num_samples, return_sites=sites
        )
        return _stack(predictive(batch.ids, batch.mask), T)
    everything = torch.ones_like(batch.mask)
    predictive = Predictive(model, num_samples=num_samples, return_sites=sites)
    return _stack(predictive(None, everything), T)


def sequence_lengths(ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """Symbols before the first EOS (the word length), ``ids.shape[:-1]``; the full length if none.

    With ``mask``, steps outside it count as ended.
    """
    ended = ids == Vocabulary.eos_id
    if mask is not None:
        ended = ended | ~mask
    T = ids.shape[-1]
    first = torch.where(ended, torch.arange(T, device=ids.device), T)
    return first.min(dim=-1).values


def to_inferencedata(replicated: dict[str, np.ndarray], observed: dict[str, np.ndarray]) -> Any:
    """An ``arviz.InferenceData`` with ``posterior_predictive`` (one chain) and ``observed_data``.

    Args:
        replicated: name -> ``(S, B)`` statistic of each replicate.
        observed: name -> ``(B,)`` statistic of each observed sequence.
    """
    import arviz as az

    return az.from_dict(
        posterior_predictive={k: np.asarray(v)[None] for k, v in replicated.items()},
        observed_data={k: np.asarray(v) for k, v in observed.items()},
    )


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
        ``(summary, idata)``: the summary holds the observed and replicated mean length, the posterior
        predictive p-value ``P(mean length of a replicate batch >= observed)``, and the fraction of
        replicates that are words of ``words``; ``idata`` holds per-sequence ``length`` for ArviZ.
    """
    reps = draw(model, guide, batch, num_samples=num_samples, posterior=posterior)  # (S, B, T)
    rep_len = sequence_lengths(reps).cpu().numpy()  # (S, B)
    obs_len = sequence_lengths(batch.ids, batch.mask).cpu().numpy()  # (B,)
    known = set(words)
    texts = [[vocab.decode(row) for row in sample] for sample in reps.cpu()]
    in_vocab = np.array([[t in known for t in sample] for sample in texts])
    summary = {
        "kind": "posterior" if posterior and not model.autoregressive else "prior",
        "num_sequences": int(obs_len.shape[0]),
        "num_samples": num_samples,
        "observed_mean_length": float(obs_len.mean()),
        "replicated_mean_length": float(rep_len.mean()),
        "replicated_mean_length_sd": float(rep_len.mean(axis=1).std()),
        "p_value_mean_length": float((rep_len.mean(axis=1) >= obs_len.mean()).mean()),
        "in_vocabulary_fraction": float(in_vocab.mean()),
        "examples": texts[0][:10],
    }
    idata = to_inferencedata({"length": rep_len}, {"length": obs_len})
    return summary, idata


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
