"""One contract for every model and guide pyroseq builds, written against behaviour, not site names.

For each model of the registry with each guide of the registry that fits it (and a few variants):

* every sample site of the model and of the guide (latent, observed, factors) lies in the plate ``seqs``
  and scores one value per sequence, with and without vectorised particles;
* the ids at padded (masked) positions change no objective (ELBO, IWAE), whatever they are;
* IWAE is one bound per sequence: given fixed guide draws, Pyro's IWAE loss is the sum over sequences of
  each one's bound (a site outside the plate would make it one joint bound over the batch);
* a model and its guide rebuilt from their JSON specs and loaded from their state dicts give the same
  objective under the same seed.

And for the guides with latent states: changing the future (a later symbol) changes the proposal, both
through the combiner and through the guide's flow.
"""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.poutine.util import site_is_subsample

from pyroseq.data.batch import pad_batch
from pyroseq.errors import ConfigError
from pyroseq.guides import GUIDES
from pyroseq.models import MODELS, StateSpaceModel
from pyroseq.runs.specs import build_from_specs, spec_differences

V = 7  # PAD, BOS, EOS and four symbols
D = 3

# A small size of every registered model and guide; a family registered without one fails
# test_every_registered_family_is_covered, so that the contract reaches it the day it is registered.
SMALL = {
    "dssm": {"vocab_size": V, "state_dim": D, "flow": "triangular", "flow_hidden": 8, "emitter_hidden": 8},
    "rnn": {"vocab_size": V, "state_dim": 5, "embed_dim": 4},
    "professor": {"vocab_size": V, "state_dim": 5, "embed_dim": 4, "disc_hidden": 6,
                  "free_running_term_only": False},
    "future": {"vocab_size": V, "state_dim": D, "flow": "diagonal", "flow_hidden": 8, "embed_dim": 4,
               "rnn_hidden": 6},
    "gaussian": {"vocab_size": V, "state_dim": D, "embed_dim": 4, "rnn_hidden": 6},
    "empty": {},
}  # fmt: skip


def _fits(model: str, guide: str) -> bool:
    """A state-space model takes a guide of its states; a model without latent sites the empty guide."""
    return issubclass(MODELS[model], StateSpaceModel) == (guide != "empty")


# Every model of the registry with every guide of the registry that fits it, and variants of them.
PAIRS = {
    f"{m}+{g}": ({"name": m, "kwargs": SMALL[m]}, {"name": g, "kwargs": SMALL[g]})
    for m in MODELS
    for g in GUIDES
    if _fits(m, g)
} | {
    "dssm-coupling-linear+gaussian": (
        {"name": "dssm", "kwargs": {**SMALL["dssm"], "flow": "coupling", "emitter_hidden": None}},
        {"name": "gaussian", "kwargs": SMALL["gaussian"]},
    ),
    "lstm-scheduled+empty": (
        {
            "name": "rnn",
            "kwargs": {**SMALL["rnn"], "cell": "lstm", "schedule": {"kind": "constant", "p": 0.5}},
        },
        {"name": "empty", "kwargs": {}},
    ),
}


def test_every_registered_family_is_covered():
    assert set(SMALL) == set(MODELS) | set(GUIDES)
    assert {spec["name"] for pair in PAIRS.values() for spec in pair} == set(MODELS) | set(GUIDES)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_says_which_size_its_emission_needs(name):
    """One check of the observations' size for every model: symbols need vocab_size, vectors obs_dim."""
    model = MODELS[name]
    with pytest.raises(ConfigError, match=r"^the categorical emission needs vocab_size .*obs_dim=88$"):
        model(obs_dim=88)
    with pytest.raises(ConfigError, match=r"^the categorical emission needs vocab_size .*obs_dim=88$"):
        model(vocab_size=V, obs_dim=88)
    with pytest.raises(ConfigError, match="^the bernoulli emission needs obs_dim .* and no vocab_size"):
        model(emission="bernoulli")
    with pytest.raises(ConfigError, match="^the bernoulli emission needs obs_dim .* and no vocab_size"):
        model(vocab_size=V, emission="bernoulli", obs_dim=88)
    with pytest.raises(ConfigError, match="^unknown emission 'poisson'"):
        model(emission="poisson", obs_dim=3)


def build(name: str):
    model_spec, guide_spec = PAIRS[name]
    model, guide = build_from_specs(model_spec, guide_spec)
    model.train()
    if hasattr(model, "disc_accuracy"):
        model.disc_accuracy = 0.9  # inside the window: the adversarial factor is part of the model
    return model, guide


def batch():
    return pad_batch([[3, 4, 5, 2], [6, 2], [3, 3, 4, 5, 6, 2], [4, 2]])


def elbo():
    return Trace_ELBO(max_plate_nesting=1)


def iwae(k: int = 4):
    return RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)


def seeded(objective, model, guide, ids, mask, seed: int = 1) -> float:
    """``objective()``'s loss under ``seed`` (max_plate_nesting given, so no guessing run draws first)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(objective().loss(model, guide, ids, mask))


def sample_sites(trace: poutine.Trace) -> dict[str, dict]:
    return {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("particles", [None, 3])
def test_every_site_is_in_the_sequence_plate_and_scores_each_sequence(name, particles):
    model, guide = build(name)
    b = batch()
    B = len(b)

    def run(fn):
        if particles is None:
            return fn
        return pyro.plate("particles", particles, dim=-2)(fn)

    guide_trace = poutine.trace(run(guide)).get_trace(b.ids, b.mask)
    model_trace = poutine.trace(poutine.replay(run(model), trace=guide_trace)).get_trace(b.ids, b.mask)
    expected = (B,) if particles is None else (particles, B)
    for trace in (guide_trace, model_trace):
        trace.compute_log_prob()
        for site_name, site in sample_sites(trace).items():
            frames = {f.name: f.dim for f in site["cond_indep_stack"]}
            assert frames.get("seqs") == -1, (name, site_name, frames)
            assert site["log_prob"].shape == expected, (name, site_name, site["log_prob"].shape)
    latent = [s for s in sample_sites(model_trace).values() if not s["is_observed"]]
    observed = [s for s in sample_sites(model_trace).values() if s["is_observed"]]
    assert observed  # the symbols are observed sites
    assert bool(latent) == (PAIRS[name][0]["name"] == "dssm")
    assert {n for n, s in sample_sites(guide_trace).items()} <= set(sample_sites(model_trace))


@pytest.mark.parametrize("name", PAIRS)
def test_padded_ids_change_no_objective(name):
    model, guide = build(name)
    b = batch()
    noisy = b.ids.clone()
    noisy[~b.mask] = torch.randint(3, V, (int((~b.mask).sum()),))  # real symbols where PAD was
    for objective in (elbo, iwae):
        clean = seeded(objective, model, guide, b.ids, b.mask)
        assert seeded(objective, model, guide, noisy, b.mask) == pytest.approx(clean, rel=1e-6, abs=1e-5)


@pytest.mark.parametrize("name", PAIRS)
def test_iwae_is_one_bound_per_sequence(name):
    """Pyro's IWAE loss, given one fixed set of K guide draws, equals -sum_b [logsumexp_k w_kb - log K]
    with the log-weights w_kb computed per particle k and sequence b from the traces of those draws.

    A site outside the sequence plate makes RenyiELBO sum the weights over the batch first, a joint bound
    -[logsumexp_k sum_b w_kb - log K], which for the DSSMs here is about half a nat away.
    """
    model, guide = build(name)
    model.eval()  # the same model for every particle: no scheduled sampling, no adversarial factor
    b, K = batch(), 5
    with torch.no_grad():
        guide_trace = poutine.trace(pyro.plate("particles", K, dim=-2)(guide)).get_trace(b.ids, b.mask)
        replayed = poutine.replay(pyro.plate("particles", K, dim=-2)(model), trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(b.ids, b.mask)
        for trace in (guide_trace, model_trace):
            trace.compute_log_prob()
        log_p = sum(s["log_prob"] for s in sample_sites(model_trace).values())  # (K, B)
        log_q = sum((s["log_prob"] for s in sample_sites(guide_trace).values()), torch.zeros(K, len(b)))
        per_sequence = -(torch.logsumexp(log_p - log_q, dim=0) - math.log(K)).sum()
        loss = iwae(K).loss(model, poutine.replay(guide, trace=guide_trace), b.ids, b.mask)
    assert loss == pytest.approx(float(per_sequence), rel=1e-5)


@pytest.mark.parametrize("name", PAIRS)
def test_specs_and_state_dicts_round_trip(name):
    model, guide = build(name)
    b = batch()
    with torch.no_grad():  # move every parameter off its initial value
        for module in (model, guide):
            if isinstance(module, torch.nn.Module):
                for p in module.parameters():
                    p.add_(0.1 * torch.randn_like(p))
    model_spec, guide_spec = (json.loads(json.dumps(spec)) for spec in PAIRS[name])
    rebuilt_model, rebuilt_guide = build_from_specs(model_spec, guide_spec)
    assert spec_differences(model_spec, rebuilt_model, role="model") == []  # save_run's check: no false alarm
    assert spec_differences(guide_spec, rebuilt_guide, role="guide") == []
    rebuilt_model.load_state_dict(model.state_dict())
    rebuilt_model.load_extra_state_dict(model.extra_state_dict())
    if isinstance(guide, torch.nn.Module):
        rebuilt_guide.load_state_dict(guide.state_dict())
    for m in (model, rebuilt_model):
        m.eval()
    for objective in (elbo, iwae):
        expected = seeded(objective, model, guide, b.ids, b.mask)
        got = seeded(objective, rebuilt_model, rebuilt_guide, b.ids, b.mask)
        assert got == pytest.approx(expected, rel=1e-6)


def latent_draws(guide, ids, mask, seed: int = 1) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    with torch.no_grad():
        trace = poutine.trace(guide).get_trace(ids, mask)
    return [s["value"] for s in sample_sites(trace).values() if not s["is_observed"]]


# Every guide of states in the registry (with its default-sized flow, if it takes one), and the future
# guide with another flow.
LATENT_GUIDES = [(g, SMALL[g].get("flow")) for g in GUIDES if g != "empty"] + [("future", "triangular")]


@pytest.mark.parametrize("guide_name, flow", LATENT_GUIDES)
@pytest.mark.parametrize("through", ["combiner", "flow"])
def test_changing_the_future_changes_the_proposal(guide_name, flow, through):
    """Two batches that differ only in a later symbol get different proposals (one seed, so the same
    noise). ``through="flow"`` zeroes the combiner's read-out (loc and scale become constants), so the
    only way left for the future to reach the proposal is the guide's flow, conditioned on [h_{t-1}, b_t]."""
    if through == "flow" and flow is None:
        pytest.skip("a guide without a flow")
    kwargs = {"vocab_size": V, "state_dim": D, "embed_dim": 4, "rnn_hidden": 6}
    if flow is not None:
        kwargs.update(flow=flow, flow_hidden=8)
    _, guide = build_from_specs(PAIRS["rnn+empty"][0], {"name": guide_name, "kwargs": kwargs})
    if through == "flow":
        with torch.no_grad():
            guide.hidden_to_loc.weight.zero_()
            guide.hidden_to_scale.weight.zero_()
    a = pad_batch([[3, 4, 5, 2], [6, 5, 2]])
    changed = a.ids.clone()
    changed[0, 2] = 4  # a symbol late in each word (each still ends with its EOS)
    changed[1, 1] = 4
    first, second = latent_draws(guide, a.ids, a.mask), latent_draws(guide, changed, a.mask)
    assert first and len(first) == len(second)
    assert any(not torch.allclose(x, y) for x, y in zip(first, second, strict=True))
    if through == "flow":  # the check is not vacuous: with the combiner read-out zeroed, so is the flow's
        same = latent_draws(guide, a.ids, a.mask)
        assert all(torch.equal(x, y) for x, y in zip(first, same, strict=True))
