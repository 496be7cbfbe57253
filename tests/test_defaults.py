"""The library's defaults are the command line's: a model built in Python is what `pyroseq train` builds.

Read from the registries and the specs, not from a list of pairs: whatever argument a spec passes to a
registered model or guide, a default configuration passes the constructor's own default.
"""

from __future__ import annotations

import inspect
import json

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


@pytest.mark.parametrize(
    "model, given, objective, particles, warmup",
    [
        ("dssm", {"steps": 10_000}, "dreg", 8, 500),  # the recipe of docs/results.md (issue 27)
        ("dssm", {"steps": 600}, "dreg", 8, 300),  # a short run warms up over its first half
        ("dssm", {"objective": "iwae"}, "iwae", 8, 500),  # named alone: K = 8 (K = 1 is the ELBO)
        ("dssm", {"objective": "elbo"}, "elbo", 1, 500),
        ("dssm", {"objective": "dreg", "particles": 4}, "dreg", 4, 500),
        ("dssm", {"jit": True}, "elbo", 1, 0),  # no importance-weighted bound traces
        ("rnn", {}, "elbo", 1, 0),  # no latent sites: the ELBO is the exact likelihood
    ],
)
def test_the_training_recipe_is_the_same_from_python_and_from_a_run(
    model, given, objective, particles, warmup
):
    """A new run (``pyroseq train``) and a ``Trainer`` built with the library's defaults train alike:
    DReG with K = 8 and a 500-step KL warm-up for a DSSM, the exact ELBO for an RNN, lr 6e-3."""
    from pyroseq.guides import empty_guide
    from pyroseq.infer import IWAE, DReG, Trainer
    from pyroseq.runs.config import resolve_kl_warmup, resolve_objective

    config = resolve_objective(resolve_kl_warmup(RunConfig(model=model, **given)))
    assert (config.objective, config.particles, config.kl_warmup, config.lr) == (
        objective,
        particles,
        warmup,
        6e-3,
    )
    built = MODELS[model](vocab_size=len(VOCAB))
    guide = GUIDES["future"](vocab_size=len(VOCAB)) if model == "dssm" else empty_guide
    options = {k: v for k, v in given.items() if k != "steps"}
    trainer = Trainer(built, guide, total_steps=given.get("steps", 1000), **options)
    kind = {"dreg": DReG, "iwae": IWAE}.get(objective)
    assert kind is None or type(trainer.loss) is kind
    assert getattr(trainer.loss, "num_particles", 1) == particles
    assert (trainer.kl_warmup, trainer.lr) == (warmup, 6e-3)


def test_a_run_saved_under_an_earlier_default_k_resumes_with_the_k_it_was_trained_with(tmp_path, monkeypatch):
    """The default K changed from 4 to 8 (docs/results.md, section (g)): a run started before trains on
    with its own K, which its config.json holds, not the library's current default."""
    from pyroseq.infer import objectives
    from pyroseq.runs.train import train_run

    tiny = dict(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8, batch_size=8)
    monkeypatch.setattr(objectives, "DEFAULT_PARTICLES", 4)
    started = train_run(RunConfig(**tiny, steps=4, valid_every=0), tmp_path / "run", progress=False)
    assert started["particles"] == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["particles"] == 4
    monkeypatch.undo()
    assert objectives.DEFAULT_PARTICLES != 4
    resumed = train_run(None, tmp_path / "run", resume=True, overrides={"steps": 6}, progress=False)
    assert (resumed["steps"], resumed["particles"]) == (6, 4)
