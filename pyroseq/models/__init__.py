"""Sequence models as Pyro programs: the deep state-space model and the teacher-forced baselines.

Every model follows :mod:`pyroseq.models.base`; :func:`build_model` makes one from its registry name and
JSON-serialisable constructor arguments (which is how a checkpoint rebuilds it);
:func:`init_emitter_bias` starts a model's emission at the symbols' unigram distribution.
"""

from __future__ import annotations

from typing import Any

from pyroseq.errors import ConfigError
from pyroseq.models.base import AutoregressiveModel, SequenceModel, StateSpaceModel, mask_special_logits
from pyroseq.models.dssm import DSSM
from pyroseq.models.init import emitter_output_layer, init_emitter_bias, unigram_log_frequencies
from pyroseq.models.professor import ProfessorForcing
from pyroseq.models.rnn import RNNLM

__all__ = [
    "SequenceModel",
    "AutoregressiveModel",
    "StateSpaceModel",
    "mask_special_logits",
    "DSSM",
    "RNNLM",
    "ProfessorForcing",
    "MODELS",
    "build_model",
    "init_emitter_bias",
    "emitter_output_layer",
    "unigram_log_frequencies",
]

MODELS: dict[str, type[SequenceModel]] = {"dssm": DSSM, "rnn": RNNLM, "professor": ProfessorForcing}


def build_model(name: str, **kwargs: Any) -> SequenceModel:
    """The model registered as ``name`` (``dssm``, ``rnn``, ``professor``), built from ``kwargs``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
