"""Model and guide specs: the registry name and constructor arguments that a checkpoint saves, and the
one function that builds a model and its guide from them.

A spec is ``{"name": ..., "kwargs": {...}}`` with JSON-serialisable arguments, for
:func:`pyroseq.models.build_model` and :func:`pyroseq.guides.build_guide`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import CheckpointError, ConfigError, first_line
from pyroseq.guides import build_guide
from pyroseq.models import SequenceModel, build_model
from pyroseq.module import load_modules
from pyroseq.runs.config import RunConfig

__all__ = ["model_spec", "guide_spec", "build_from_specs", "spec_differences"]


# The DSSM's arguments added after runs were first saved, and their defaults: a spec gives them only where
# they differ, so that the spec of a run saved before they existed is the spec a run of the same options
# gets today, and spec_differences fills the defaults back in.
_DSSM_LATER = {"emitter_layers": RunConfig.emitter_layers, "emitter_activation": RunConfig.emitter_activation}


def _observed(config: RunConfig, vocab: Vocabulary | None) -> dict[str, Any]:
    """What a model or guide is told of its observations: ``vocab_size`` for symbols; for frames the
    emission family the data calls for and ``obs_dim`` (the arguments a model of symbols saved before
    emission families had, so that its spec is unchanged)."""
    if config.emission == "categorical":
        if vocab is None:
            raise ConfigError(f"data {config.data} needs the corpus's vocabulary", params=("data",))
        return {"vocab_size": len(vocab)}
    return {"emission": config.emission, "obs_dim": config.obs_dim}


def model_spec(config: RunConfig, vocab: Vocabulary | None) -> dict[str, Any]:
    """The registry name and constructor arguments of the run's model (saved in the checkpoint); ``vocab``
    is None for data of frames."""
    observed = _observed(config, vocab)
    if config.model == "dssm":
        kwargs = {**observed, "state_dim": config.state_dim, "flow": config.flow,
                  "flow_hidden": config.flow_hidden,
                  "emitter_hidden": config.emitter_hidden or None}  # fmt: skip
        later = {name: getattr(config, name) for name in _DSSM_LATER}
        kwargs |= {name: value for name, value in later.items() if value != _DSSM_LATER[name]}
        return {"name": "dssm", "kwargs": kwargs}
    kwargs = {**observed, "cell": config.cell, "state_dim": config.state_dim,
              "embed_dim": config.embed_dim, "num_layers": config.layers}  # fmt: skip
    if config.training == "scheduled":
        k = config.schedule_k
        params = {
            "linear": {"k": 1.0, "c": 1.0 / config.steps if k is None else k, "eps_min": 0.0},
            "exp": {"k": 0.01 ** (1.0 / config.steps) if k is None else k},
            "invsigmoid": {"k": max(1.0, config.steps / 10) if k is None else k},
        }
        if config.schedule not in params:
            raise ConfigError(f"unknown schedule {config.schedule!r}: use one of {', '.join(params)}")
        kwargs["schedule"] = {"kind": config.schedule, **params[config.schedule]}
    if config.training == "professor":
        kwargs["adversarial_weight"] = config.adversarial_weight
        return {"name": "professor", "kwargs": kwargs}
    return {"name": "rnn", "kwargs": kwargs}


def guide_spec(config: RunConfig, vocab: Vocabulary | None) -> dict[str, Any]:
    """The registry name and constructor arguments of the run's guide (``"empty"`` for the RNNs); a guide
    of frames reads them through ``obs_dim``."""
    if config.model != "dssm":
        return {"name": "empty", "kwargs": {}}
    observed = _observed(config, vocab)
    observed.pop("emission", None)  # the guide reads the frames, whatever law they have
    kwargs = {**observed, "state_dim": config.state_dim, "embed_dim": config.embed_dim,
              "rnn_hidden": config.guide_hidden, "rnn_cell": config.guide_cell}  # fmt: skip
    if config.guide != "gaussian":
        kwargs["flow"] = None if config.guide_flow == "none" else config.guide_flow
        kwargs["flow_hidden"] = config.flow_hidden
    return {"name": config.guide, "kwargs": kwargs}


# Where a spec argument comes from, for those not read from the RunConfig field of their own name.
_SOURCES = {
    "model": {"vocab_size": "vocab", "emission": "data", "obs_dim": "data", "num_layers": "layers"},
    "guide": {
        "vocab_size": "vocab",
        "obs_dim": "data",
        "rnn_hidden": "guide_hidden",
        "rnn_cell": "guide_cell",
    },
}


def spec_differences(spec: dict[str, Any], module: Any, *, role: str) -> list[str]:
    """How ``module`` differs from what ``spec`` builds, in the terms of a run's configuration: one
    ``"guide_cell (rnn_cell) 'gru' vs the guide's 'relu'"`` for each constructor argument that the module
    keeps as a plain value under the argument's name (sizes, cells, ``vocab_size``); arguments it keeps
    otherwise (a flow, a hidden width) show when its weights do not load.

    Args:
        spec: a model or guide spec, as :func:`model_spec` or :func:`guide_spec` makes it.
        module: the model or guide to compare.
        role: ``"model"`` or ``"guide"``.
    """
    differ = []
    kwargs = {**(_DSSM_LATER if role == "model" and spec["name"] == "dssm" else {}), **spec["kwargs"]}
    for argument, wanted in kwargs.items():
        have = getattr(module, argument, wanted)
        if isinstance(have, str | int | float | None) and have != wanted:
            source = _SOURCES[role].get(argument, argument)
            said = source if source == argument else f"{source} ({argument})"
            differ.append(f"{said} {wanted!r} vs the {role}'s {have!r}")
    return differ


def build_from_specs(
    model: dict[str, Any],
    guide: dict[str, Any],
    *,
    device: str | torch.device = "cpu",
    saved_in: str | Path | None = None,
    state: dict[str, Any] | None = None,
) -> tuple[SequenceModel, Callable[..., Any]]:
    """The model and guide that the specs ``model`` and ``guide`` describe, on ``device``: newly initialised,
    or with the weights in ``state``.

    Args:
        model: a model spec, as :func:`model_spec` makes it.
        guide: a guide spec, as :func:`guide_spec` makes it.
        device: where to put their parameters.
        saved_in: the checkpoint the specs were read from, if any: a spec there that this version cannot
            build (an unknown argument, a bad value), or weights that do not fit, are then a
            :class:`CheckpointError` naming it.
        state: a checkpoint's state, whose weights (:func:`~pyroseq.module.load_modules`) are loaded.
    """
    try:
        built_model = build_model(model["name"], **model["kwargs"]).to(device)
        built_guide = build_guide(guide["name"], **guide["kwargs"])
    except (TypeError, ValueError, KeyError) as e:
        if saved_in is None:
            raise
        raise CheckpointError(
            f"{saved_in} describes a model this pyroseq cannot build: {first_line(e)}"
        ) from None
    if isinstance(built_guide, torch.nn.Module):
        built_guide = built_guide.to(device)
    if state is not None:
        try:
            load_modules(built_model, built_guide, state)
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise CheckpointError(
                f"{saved_in} does not match the model its config describes: {first_line(e)}"
            ) from None
    return built_model, built_guide
