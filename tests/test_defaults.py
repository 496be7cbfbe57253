"""The library's defaults are the command line's: a model built in Python is what `pyroseq train` builds.

Read from the registries and the specs, not from a list of pairs: whatever argument a spec passes to a
registered model or guide, a default configuration passes the constructor's own default.
"""

from __future__ import annotations

import inspect

import pytest

from pyroseq.data.vocab import Vocabulary
from pyroseq.guides import GUIDES
from pyroseq.models import MODELS
from pyroseq.runs.config import TRAINING, RunConfig
from pyroseq.runs.specs import guide_spec, model_spec

VOCAB = Vocabulary("abc")
# Every kind of run a configuration describes: the DSSM with each guide, the RNN with each training.
RUNS = [{"model": "dssm", "guide": g} for g in ("future", "gaussian")] + [
    {"model": "rnn", "training": t} for t in TRAINING
]
SET_BY_THE_RUN = {"vocab_size", "schedule"}  # the corpus's, and the schedule's rate set from --steps


def _defaults(factory) -> dict:
    return {k: p.default for k, p in inspect.signature(factory).parameters.items()}


@pytest.mark.parametrize("run", RUNS, ids=lambda r: "-".join(r.values()))
def test_a_default_configuration_passes_the_constructors_defaults(run):
    config = RunConfig(**run)
    for spec, registry in ((model_spec(config, VOCAB), MODELS), (guide_spec(config, VOCAB), GUIDES)):
        defaults = _defaults(registry[spec["name"]])
        passed = {k: v for k, v in spec["kwargs"].items() if k not in SET_BY_THE_RUN}
        assert passed == {k: defaults[k] for k in passed}, spec["name"]


def test_every_registered_model_and_guide_is_a_kind_of_run():
    config_models = {model_spec(RunConfig(**run), VOCAB)["name"] for run in RUNS}
    config_guides = {guide_spec(RunConfig(**run), VOCAB)["name"] for run in RUNS}
    assert config_models == set(MODELS) and config_guides == set(GUIDES)
