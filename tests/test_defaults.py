"""The library's defaults are the command line's: a model built in Python is what `pyroseq train` builds."""

from __future__ import annotations

import inspect

import pytest

from pyroseq.guides import FutureGuide, GaussianGuide
from pyroseq.models import DSSM
from pyroseq.runs.config import RunConfig

# (class, its argument, the RunConfig field that sets it in `pyroseq train`)
PAIRS = [
    (DSSM, "state_dim", "state_dim"),
    (DSSM, "flow", "flow"),
    (DSSM, "flow_hidden", "flow_hidden"),
    (DSSM, "emitter_hidden", "emitter_hidden"),
    (FutureGuide, "state_dim", "state_dim"),
    (FutureGuide, "flow", "guide_flow"),
    (FutureGuide, "flow_hidden", "flow_hidden"),
    (FutureGuide, "embed_dim", "embed_dim"),
    (FutureGuide, "rnn_hidden", "guide_hidden"),
    (GaussianGuide, "state_dim", "state_dim"),
    (GaussianGuide, "embed_dim", "embed_dim"),
    (GaussianGuide, "rnn_hidden", "guide_hidden"),
]


@pytest.mark.parametrize(("cls", "argument", "field"), PAIRS, ids=[f"{c.__name__}.{a}" for c, a, _ in PAIRS])
def test_library_default_equals_the_cli_default(cls, argument, field):
    assert inspect.signature(cls).parameters[argument].default == getattr(RunConfig(), field)
