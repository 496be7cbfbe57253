"""Tests of the DSSM model (pyroseq.models.dssm) and its guides (pyroseq.guides)."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Predictive, RenyiELBO, Trace_ELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import MultivariateNormal

from pyroseq.data.batch import pad_batch
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate import (
    WordLogProbs,
    guide_word_log_probs,
    log_weights,
    prior_word_log_probs,
    word_metrics,
)
from pyroseq.flows.trajectory import StateTrajectory
from pyroseq.guides import GUIDES, FutureGuide, GaussianGuide, build_guide, empty_guide
from pyroseq.models.dssm import DSSM

VOCAB = Vocabulary("abc")
V = len(VOCAB)  # 6
D = 4  # state dimension
H = 8  # guide GRU size
WORDS = ["ab", "c", "abca", "ba"]


def in_particle_plate(fn, num_particles: int):
    """``fn`` run inside a vectorised particle plate at dim -2, as the IWAE objective runs it."""

    def wrapped(*args):
        with pyro.plate("particles", num_particles, dim=-2):
            fn(*args)

    return wrapped


def make_model(flow: str | None = None, **kwargs) -> DSSM:
    flow = flow or T.conditional_affine_coupling(D, context_dim=D, hidden_dims=[16])
    return DSSM(vocab_size=V, state_dim=D, flow=flow, flow_hidden=16, emitter_hidden=16, **kwargs)


def make_guide_(kind: str) -> FutureGuide:
    if kind == "gaussian":
        return GaussianGuide(vocab_size=V, state_dim=D, embed_dim=4, rnn_hidden=H)
    flow = T.conditional_spline(D, context_dim=D + H, hidden_dims=[16], count_bins=4)
    return FutureGuide(vocab_size=V, state_dim=D, flow=flow, embed_dim=4, rnn_hidden=H)


def batch_of(words: list[str], max_length: int | None = None):
    return pad_batch([VOCAB.encode(w) for w in words], max_length=max_length)


def latent_sites(trace) -> list[str]:
    return [
        n
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]


def iwae(model, guide, ids, mask, *, num_particles: int, repeats: int) -> torch.Tensor:
    """``repeats`` independent IWAE_K estimates per sequence, ``(repeats, B)``; K=1 gives the ELBO."""
    lw = log_weights(model, guide, ids, mask, num_particles=num_particles * repeats)  # (R*K, B)
    lw = lw.reshape(repeats, num_particles, -1)  # (R, K, B)
    return torch.logsumexp(lw, dim=1) - math.log(num_particles)  # (R, B)


def per_word(estimate: WordLogProbs) -> list[tuple[float, float]]:
    """Each word's ``(log q(w) estimate, its standard error)``, from :func:`word_metrics` on a one-hot p."""
    out = []
    for i in range(estimate.log_q.numel()):
        m = word_metrics(estimate, torch.nn.functional.one_hot(torch.tensor(i), estimate.log_q.numel()))
        out.append((-m["ce_nats"], m["ce_stderr"]))
    return out


def train(model, guide, batch, *, loss, steps: int, lr: float = 0.01) -> list[float]:
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss)
    return [svi.step(batch.ids, batch.mask) for _ in range(steps)]


# --- traces: sites, shapes, names -----------------------------------------------------------------


@pytest.mark.parametrize("guide_kind", ["future", "gaussian"])
@pytest.mark.parametrize("particles", [None, 3])
def test_model_and_guide_share_latent_sites_with_right_shapes(guide_kind, particles):
    model, guide = make_model(), make_guide_(guide_kind)
    batch = batch_of(WORDS)
    B, Tn = batch.ids.shape
    lead = (B,) if particles is None else (particles, B)
    wrap = (lambda fn: fn) if particles is None else (lambda fn: in_particle_plate(fn, particles))
    guide_trace = poutine.trace(wrap(guide)).get_trace(batch.ids, batch.mask)
    model_trace = poutine.trace(poutine.replay(wrap(model), trace=guide_trace)).get_trace(
        batch.ids, batch.mask
    )

    assert latent_sites(guide_trace) == ["h"]
    assert latent_sites(model_trace) == ["h"]
    h = model_trace.nodes["h"]
    assert h["value"].shape == lead + (Tn, D)
    assert h["fn"].event_shape == (Tn, D) and h["fn"].batch_shape == lead
    assert guide_trace.nodes["h"]["value"].shape == lead + (Tn, D)
    for t in range(1, Tn + 1):
        w = model_trace.nodes[f"w_{t}"]
        assert w["is_observed"]
        assert torch.equal(w["value"], batch.ids[:, t - 1])
    for site in (h, guide_trace.nodes["h"], model_trace.nodes["w_1"]):
        assert any(f.name == "seqs" and f.dim == -1 for f in site["cond_indep_stack"])
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    for site in (h, guide_trace.nodes["h"], model_trace.nodes["w_1"]):
        assert site["log_prob"].shape == lead  # one figure per particle and sequence


def test_param_names_of_model_and_guide_do_not_collide():
    model, guide = make_model(), make_guide_("future")
    batch = batch_of(WORDS)
    names = set()
    for fn, role in ((model, "model"), (guide, "guide")):
        assert fn._pyro_name.startswith(role)  # model, model_2, ... (pyroseq.module)
        trace = poutine.trace(fn).get_trace(batch.ids, batch.mask)
        params = [n for n, s in trace.nodes.items() if s["type"] == "param"]
        assert params and all(n.startswith(fn._pyro_name + ".") for n in params)
        names |= set(params)
    # every torch parameter of the modules is seen by Pyro, so SVI trains it
    assert len(names) == len(list(model.parameters())) + len(list(guide.parameters()))


def test_transition_initial_state_and_sample_states_shapes():
    model = make_model()
    h0 = model.initial_state((5, 2))
    assert h0.shape == (5, 2, D)
    p = model.transition(h0)
    assert p.batch_shape == (5, 2) and p.event_shape == (D,)
    assert model.emission_logits(h0).shape == (5, 2, V)
    states = model.sample_states(7, 3)
    assert states.shape == (7, 3, D)
    assert torch.isfinite(states).all()


def test_transition_density_is_the_gaussian_of_the_triangular_flow():
    """With the triangular flow, p(h_t | h_{t-1}) = N(mu, L L^T), mu and L from the flow's hypernet.

    The DSSM scores a fresh tensor (no cache hit) through f^{-1} and its log-determinant; the reference
    is torch's MultivariateNormal, built directly from the hypernet's outputs.
    """
    torch.manual_seed(0)
    model = DSSM(vocab_size=V, state_dim=D, flow="triangular", flow_hidden=16, emitter_hidden=16).double()
    flow = model.transition_flow
    with torch.no_grad():
        for parameter in flow.parameters():  # away from the near-identity init
            parameter.add_(0.3 * torch.randn_like(parameter))
        h_prev = torch.randn(6, D, dtype=torch.float64)
        h = model.transition(h_prev).sample().clone()  # a new tensor object: no cache hit
        mu, log_diag, lower = flow.hypernet(h_prev).split([D, D, D * (D - 1) // 2], dim=-1)
        log_diag = log_diag.clamp(flow.log_scale_min_clip, flow.log_scale_max_clip)
        scale_tril = torch.diag_embed(log_diag.exp())
        rows, cols = torch.tril_indices(D, D, -1)
        scale_tril[:, rows, cols] = lower
        reference = MultivariateNormal(loc=mu, scale_tril=scale_tril)
        torch.testing.assert_close(
            model.transition(h_prev).log_prob(h), reference.log_prob(h), atol=1e-10, rtol=0
        )


# --- masking -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("guide_kind", ["future", "gaussian"])
def test_padded_steps_contribute_nothing(guide_kind):
    """More padding (with any symbols in it) leaves the ELBO unchanged: the emissions there are masked, and
    the states there, N(0, I) in the model and in the guide, cancel (in float64, to rounding)."""
    model, guide = make_model().double(), make_guide_(guide_kind).double()
    batch = batch_of(WORDS)
    longer = batch_of(WORDS, max_length=batch.ids.shape[1] + 3)  # three more steps of padding
    scribbled = longer.ids.masked_fill(~longer.mask, 4)  # arbitrary real symbols where the mask is False

    def elbo(ids, mask):
        pyro.set_rng_seed(1)
        return Trace_ELBO().loss(model, guide, ids, mask)

    reference = elbo(batch.ids, batch.mask)
    assert elbo(longer.ids, longer.mask) == pytest.approx(reference, rel=1e-6)
    assert elbo(scribbled, longer.mask) == pytest.approx(reference, rel=1e-6)
    # the emissions' log-densities are exactly zero where the mask is False
    guide_trace = poutine.trace(guide).get_trace(scribbled, longer.mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(scribbled, longer.mask)
    model_trace.compute_log_prob()
    for t in range(1, longer.ids.shape[1] + 1):
        lp = model_trace.nodes[f"w_{t}"]["log_prob"]
        assert torch.all(lp[~longer.mask[:, t - 1]] == 0)
        assert torch.all(lp[longer.mask[:, t - 1]] != 0)


TRANSITION_FLOWS = {
    "diagonal": "diagonal",
    "triangular": "triangular",
    "coupling": "coupling",
    "spline": "spline",
    "rqspline": "rqspline",
    "triangular+coupling": "triangular+coupling",
    "pyro_affine_coupling": lambda: T.conditional_affine_coupling(D, context_dim=D, hidden_dims=[16]),
    "pyro_spline": lambda: T.conditional_spline(D, context_dim=D, hidden_dims=[16], count_bins=4),
}


def _away_from_init(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))


def _perturbed_dssm(flow: str) -> DSSM:
    """A float64 DSSM of V symbols with the transition ``TRANSITION_FLOWS[flow]``, moved off its
    initialisation (seed 0)."""
    torch.manual_seed(0)
    spec = TRANSITION_FLOWS[flow]
    model = DSSM(
        vocab_size=V, state_dim=D, flow=spec if isinstance(spec, str) else spec(), flow_hidden=16
    ).double()
    _away_from_init(model)
    return model


@pytest.mark.parametrize("particles", [None, 3])
@pytest.mark.parametrize("flow", list(TRANSITION_FLOWS))
def test_time_parallel_scoring_equals_step_by_step(flow, particles):
    """The model's site "h" scores a trajectory in one call over all steps; that equals the chain's
    step-by-step density: sum over real steps of log p(h_t | h_{t-1}) (``model.transition``), plus
    log N(h_t; 0, I) at padded steps."""
    model = _perturbed_dssm(flow)
    batch = batch_of(WORDS)
    B, Tn = batch.ids.shape
    lead = (B,) if particles is None else (particles, B)
    value = torch.randn(lead + (Tn, D), dtype=torch.float64)
    run = model if particles is None else in_particle_plate(model, particles)
    trace = poutine.trace(poutine.condition(run, data={"h": value})).get_trace(batch.ids, batch.mask)
    parallel = trace.nodes["h"]["fn"].log_prob(value)  # (*lead,)

    standard = dist.Normal(torch.zeros(D, dtype=torch.float64), 1.0).to_event(1)
    h_prev, step_by_step = model.initial_state(lead), torch.zeros(lead, dtype=torch.float64)
    for t in range(Tn):
        h_t = value[..., t, :].clone()  # a new tensor: no transform cache can answer
        real = batch.mask[:, t]
        step_by_step += torch.where(real, model.transition(h_prev).log_prob(h_t), standard.log_prob(h_t))
        h_prev = h_t
    assert parallel.shape == lead
    torch.testing.assert_close(parallel, step_by_step, atol=1e-9, rtol=0)


@pytest.mark.parametrize("flow", list(TRANSITION_FLOWS))
def test_noise_recovers_the_noise_that_drove_the_states(flow):
    """``model.noise(h)`` inverts the whole trajectory at once: the white noise pushed step by step through
    ``f_G(. ; h_{t-1})`` from ``h_0`` comes back, with particles in front."""
    model = _perturbed_dssm(flow)
    # three steps: these perturbed flows expand so fast that longer trajectories lose digits either way
    xi = torch.randn(3, 2, 3, D, dtype=torch.float64)  # (K, B, T, D)
    h, states = model.initial_state((3, 2)), []
    for t in range(3):
        h = model.transition_flow.condition(h)(xi[..., t, :])
        states.append(h)
    recovered = model.noise(torch.stack(states, dim=-2).clone())  # a new tensor: no cache can answer
    torch.testing.assert_close(recovered, xi, atol=1e-6, rtol=0)


def test_emission_sites_score_the_observed_symbols_as_their_categoricals():
    """Each observed w_t scores like Categorical(softmax(g(h_t))) at the observed symbol (0 where padded),
    though the model scores all steps in one call; a value that is not the observed one is scored too."""
    torch.manual_seed(0)
    model = make_model()
    batch = batch_of(WORDS)
    B, Tn = batch.ids.shape
    value = torch.randn(3, B, Tn, D)
    run = in_particle_plate(model, 3)
    trace = poutine.trace(poutine.condition(run, data={"h": value})).get_trace(batch.ids, batch.mask)
    trace.compute_log_prob()
    other = torch.full((B,), VOCAB.eos_id)
    for t in range(1, Tn + 1):
        step = dist.Categorical(logits=model.emission_logits(value[..., t - 1, :]))
        expected = step.log_prob(batch.ids[:, t - 1]).masked_fill(~batch.mask[:, t - 1], 0.0)  # (3, B)
        torch.testing.assert_close(trace.nodes[f"w_{t}"]["log_prob"], expected)
        torch.testing.assert_close(
            trace.nodes[f"w_{t}"]["fn"].base_dist.log_prob(other), step.log_prob(other)
        )
        # Its support is the vocabulary, as Categorical's is: Pyro's validation and enumeration read it.
        support = trace.nodes[f"w_{t}"]["fn"].base_dist.support
        assert support.check(torch.tensor([0, len(VOCAB) - 1])).all()
        assert not support.check(torch.tensor([-1, len(VOCAB)])).any()


GUIDE_FLOWS = {
    "gaussian": None,
    "diagonal": "diagonal",
    "spline": "spline",
    "pyro_affine_coupling": lambda: T.conditional_affine_coupling(D, context_dim=D + H, hidden_dims=[16]),
}


def _perturbed_guide(flow: str) -> FutureGuide:
    """A float64 future guide with the guide flow ``flow`` (a key of ``GUIDE_FLOWS``), away from its init."""
    torch.manual_seed(0)
    spec = GUIDE_FLOWS[flow]
    guide = FutureGuide(
        vocab_size=V,
        state_dim=D,
        flow=spec if spec is None or isinstance(spec, str) else spec(),
        flow_hidden=16,
        embed_dim=4,
        rnn_hidden=H,
    ).double()
    _away_from_init(guide)
    return guide


@pytest.mark.parametrize("flow", list(GUIDE_FLOWS))
def test_guide_scores_its_draws_as_it_scores_any_trajectory(flow):
    """The guide's site "h" keeps the log-density it summed while drawing; scoring the same values anew
    (a copy, in one call over all steps, through the guide flow's inverse) gives the same figure."""
    guide = _perturbed_guide(flow)
    batch = batch_of(WORDS)
    site = poutine.trace(in_particle_plate(guide, 3)).get_trace(batch.ids, batch.mask).nodes["h"]
    drawn = site["fn"].log_prob(site["value"])  # (3, B)
    rescored = site["fn"].log_prob(site["value"].clone())
    torch.testing.assert_close(drawn, rescored, atol=1e-9, rtol=0)


@pytest.mark.parametrize("flow", list(GUIDE_FLOWS))
def test_the_guide_steps_only_the_running_rows_and_draws_what_stepping_every_row_draws(flow, monkeypatch):
    """On a batch longest first (as pyroseq's samplers give it) the guide's trajectory steps only the words
    still running; its draw, log-density and gradients are those of stepping every row."""
    guide = _perturbed_guide(flow)
    batch = batch_of(sorted(WORDS, key=len, reverse=True))  # 5, 3, 3, 2 steps with EOS

    def draw():
        guide.zero_grad()
        torch.manual_seed(1)
        site = poutine.trace(in_particle_plate(guide, 3)).get_trace(batch.ids, batch.mask).nodes["h"]
        log_prob = site["fn"].log_prob(site["value"])
        (site["value"].sum() + log_prob.sum()).backward()
        return [site["value"].detach(), log_prob.detach()] + [p.grad.clone() for p in guide.parameters()]

    counts, running = [], StateTrajectory._running
    monkeypatch.setattr(
        StateTrajectory, "_running", lambda self, mask: counts.append(running(self, mask)) or counts[-1]
    )
    ours = draw()
    assert counts == [[4, 4, 3, 1, 1]]
    monkeypatch.setattr(StateTrajectory, "_running", lambda self, mask: None)
    for a, b in zip(ours, draw(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("objective", ["elbo", "dreg"])
def test_the_model_scores_the_guides_states_on_the_real_steps_only_and_gets_what_every_step_gets(
    objective, monkeypatch
):
    """The model's site "h" scores the guide's trajectory by calling its transition on the real steps alone
    (a batch in any order), and its emitter scores the observations there alone; the loss and every
    gradient, of the model and of the guide, are those of scoring every step."""
    import pyroseq.models.dssm as dssm_module
    from pyroseq.infer import DReG

    guide = _perturbed_guide("diagonal")
    torch.manual_seed(2)
    model = make_model().double()
    _away_from_init(model)
    batch = batch_of(WORDS)  # 3, 2, 5, 3 steps with EOS: not longest first
    called = []

    def loss_and_grads():
        pyro.clear_param_store()
        torch.manual_seed(1)
        if objective == "elbo":
            loss = Trace_ELBO(num_particles=3, vectorize_particles=True).differentiable_loss(
                model, guide, batch.ids, batch.mask
            )
        else:
            loss = DReG(num_particles=3).differentiable_loss(model, guide, batch.ids, batch.mask)
        params = [*model.parameters(), *guide.parameters()]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [loss.detach()] + [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]

    positions = StateTrajectory._real_positions
    monkeypatch.setattr(
        StateTrajectory, "_real_positions", lambda self, v: called.append(positions(self, v)) or called[-1]
    )
    emissions = dssm_module._Emissions
    emitted = []
    monkeypatch.setattr(dssm_module, "_Emissions", lambda *a: emitted.append(a[-1]) or emissions(*a))
    ours = loss_and_grads()
    # the model's calls (Pyro's first run of a model, to count its plates, scores it too)
    assert {len(p) for p in called if p is not None} == {int(batch.mask.sum())}
    assert {len(p) for p in emitted} == {int(batch.mask.sum())}
    monkeypatch.setattr(StateTrajectory, "_real_positions", lambda self, v: None)
    monkeypatch.setattr(dssm_module, "real_step_positions", lambda mask: None)  # the emissions of every step
    for a, b in zip(ours, loss_and_grads(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def _user_mean_field_guide(ids, mask):
    """A hand-written guide that ignores the mask: one Normal per batch slot, step and state entry."""
    B, Tn = mask.shape
    loc = pyro.param("user_loc", torch.zeros(B, Tn, D))
    scale = pyro.param("user_scale", torch.ones(B, Tn, D), constraint=dist.constraints.positive)
    with pyro.plate("seqs", B, dim=-1):
        pyro.sample("h", dist.Normal(loc, scale).to_event(2))


@pytest.mark.parametrize("guide_kind", ["AutoNormal", "AutoDiagonalNormal", "user"])
def test_guides_that_ignore_the_mask_give_a_valid_bound(guide_kind):
    """A guide that does not know the mask pays for the entropy of its padded states: -ELBO stays above
    0 nats per word on discrete data (it fell to -58.8 when the model masked its padded states)."""
    pyro.set_rng_seed(0)
    model = make_model()
    batch = batch_of(["abcab", "c", "a", "b"])  # much padding
    guide = {
        "AutoNormal": lambda: pyro.infer.autoguide.AutoNormal(model),
        "AutoDiagonalNormal": lambda: pyro.infer.autoguide.AutoDiagonalNormal(model),
        "user": lambda: _user_mean_field_guide,
    }[guide_kind]()
    losses = train(model, guide, batch, loss=Trace_ELBO(), steps=300, lr=0.05)
    per_word = [loss / batch.ids.shape[0] for loss in losses]
    assert all(math.isfinite(x) for x in per_word)
    assert min(per_word) > 0, min(per_word)
    assert per_word[-1] < per_word[0]  # it trains


def test_a_guide_of_another_state_size_is_refused():
    model = make_model()
    guide = GaussianGuide(vocab_size=V, state_dim=D + 1, embed_dim=4, rnn_hidden=H)
    batch = batch_of(WORDS)
    with pytest.raises(ConfigError, match=f"state_dim={D}"):
        Trace_ELBO().loss(model, guide, batch.ids, batch.mask)


def test_future_summary_sees_only_the_future_within_the_sequence():
    guide = make_guide_("gaussian")
    batch = batch_of(["abca", "cb"])
    b = guide.future_summary(batch.ids, batch.mask)  # (B, T, H)
    alone = guide.future_summary(batch.ids[1:, :3], batch.mask[1:, :3])  # "cb" + EOS without padding
    assert torch.allclose(b[1, :3], alone[0], atol=1e-6)
    changed = batch.ids.clone()
    changed[0, 0] = VOCAB.encode("b", add_eos=False)[0]  # change w_1 of "abca": only b_1 may change
    b_changed = guide.future_summary(changed, batch.mask)
    assert not torch.allclose(b_changed[0, 0], b[0, 0])
    assert torch.allclose(b_changed[0, 1:], b[0, 1:])


# --- inference ---------------------------------------------------------------------------------------


def _params_snapshot():
    return {n: v.detach().clone() for n, v in pyro.get_param_store().items()}


@pytest.mark.parametrize(
    "loss",
    [
        Trace_ELBO(),
        RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True),
        JitTrace_ELBO(ignore_jit_warnings=True),
    ],
    ids=["Trace_ELBO", "IWAE_K4", "JitTrace_ELBO"],
)
@pytest.mark.parametrize("guide_kind", ["future", "gaussian"])
def test_svi_steps_give_finite_losses_and_train_every_parameter(loss, guide_kind):
    model, guide = make_model(), make_guide_(guide_kind)
    batch = batch_of(WORDS)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss)
    svi.step(batch.ids, batch.mask)
    before = _params_snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        losses = [svi.step(batch.ids, batch.mask) for _ in range(3)]
    assert all(math.isfinite(x) for x in losses)
    after = _params_snapshot()
    assert before.keys() == after.keys()
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert unchanged == []


def test_a_user_written_guide_function_works_with_the_model():
    model = make_model()
    batch = batch_of(WORDS)
    B, Tn = batch.ids.shape

    def mean_field_guide(ids, mask):
        loc = pyro.param("my_loc", torch.zeros(B, Tn, D))
        scale = pyro.param("my_scale", torch.ones(B, Tn, D), constraint=dist.constraints.positive)
        with pyro.plate("seqs", B, dim=-1):
            pyro.sample("h", dist.Normal(loc, scale).to_event(2))  # the whole trajectory (B, T, D)

    losses = train(model, mean_field_guide, batch, loss=Trace_ELBO(num_particles=4), steps=60, lr=0.05)
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_ids_none_draws_real_symbols_and_eos_only():
    model = make_model()
    B, Tn = 64, 5
    mask = torch.ones(B, Tn, dtype=torch.bool)
    trace = poutine.trace(model).get_trace(None, mask)
    drawn = torch.stack([trace.nodes[f"w_{t}"]["value"] for t in range(1, Tn + 1)], dim=-1)  # (B, T)
    assert drawn.shape == (B, Tn)
    assert latent_sites(trace) == ["h"] + [f"w_{t}" for t in range(1, Tn + 1)]
    assert drawn.min() >= VOCAB.eos_id and drawn.max() < V
    assert len(drawn.unique()) > 1  # a draw, not a constant
    predictive = Predictive(model, num_samples=3, parallel=True, return_sites=["w_1", "h"])
    samples = predictive(None, mask)
    assert samples["w_1"].shape == (3, B)
    assert samples["h"].shape == (3, B, Tn, D)
    assert samples["w_1"].min() >= VOCAB.eos_id


# --- configuration errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vocab_size": 0},
        {"vocab_size": 3},
        {"state_dim": 0},
        {"state_dim": -2},
        {"flow_hidden": 0},
        {"emitter_hidden": 0},
        {"state_dim": 2.5},
    ],
)
def test_model_rejects_bad_sizes(kwargs):
    args = {"vocab_size": V, "state_dim": D, "flow": T.conditional_affine_coupling(D, context_dim=D)}
    with pytest.raises(ConfigError):
        DSSM(**{**args, **kwargs})


@pytest.mark.parametrize(
    "flow", [T.conditional_planar(D, D), T.conditional_radial(D, D)], ids=["planar", "radial"]
)
def test_model_rejects_a_flow_without_inverse(flow):
    with pytest.raises(ConfigError, match="no inverse"):
        DSSM(vocab_size=V, state_dim=D, flow=flow)


def test_model_rejects_a_flow_of_the_wrong_size_or_type():
    with pytest.raises(ConfigError, match="dimension"):
        DSSM(vocab_size=V, state_dim=D, flow=T.conditional_affine_coupling(D + 2, context_dim=D))
    with pytest.raises(ConfigError, match="ConditionalTransformModule"):
        DSSM(vocab_size=V, state_dim=D, flow=torch.nn.Linear(D, D))


def test_guides_reject_bad_sizes_and_guide_without_ids():
    with pytest.raises(ConfigError):
        GaussianGuide(vocab_size=V, state_dim=D, rnn_hidden=0)
    with pytest.raises(ConfigError):
        FutureGuide(vocab_size=2, state_dim=D, flow=None)
    with pytest.raises(ConfigError, match="dimension"):  # the context is [h_{t-1}, b_t]: D + H, not D
        FutureGuide(
            vocab_size=V, state_dim=D, rnn_hidden=H, flow=T.conditional_affine_coupling(D, context_dim=D)
        )
    guide = make_guide_("gaussian")
    with pytest.raises(DataError):
        guide(None, torch.ones(2, 3, dtype=torch.bool))


def test_guide_registry():
    assert set(GUIDES) == {"empty", "future", "gaussian"}
    assert build_guide("empty") is empty_guide
    guide = build_guide("gaussian", vocab_size=V, state_dim=D, rnn_hidden=H)
    assert isinstance(guide, GaussianGuide) and guide.posterior_flow is None
    no_flow = build_guide("future", vocab_size=V, state_dim=D, rnn_hidden=H, flow="none")
    assert no_flow.posterior_flow is None
    with pytest.raises(ConfigError, match="empty, future, gaussian"):
        build_guide("amortised", vocab_size=V)


@pytest.mark.parametrize("name", ["triangular", "coupling", "spline", "diagonal+coupling"])
def test_flows_by_name_from_pyroseq_flows(name):
    batch = batch_of(WORDS)
    model = DSSM(vocab_size=V, state_dim=D, flow=name, flow_hidden=8, emitter_hidden=None)
    guide = FutureGuide(vocab_size=V, state_dim=D, flow=name, flow_hidden=8, embed_dim=4, rnn_hidden=H)
    iwae_k3 = RenyiELBO(alpha=0, num_particles=3, vectorize_particles=True)
    assert math.isfinite(iwae_k3.loss(model, guide, batch.ids, batch.mask))
    with pytest.raises(ConfigError, match="unknown flow"):
        DSSM(vocab_size=V, state_dim=D, flow=name + "+planar")


# --- the bounds and the fit --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """A model and a future guide (with a coupling flow) after 150 Trace_ELBO steps on WORDS."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = make_model()
    guide = FutureGuide(
        vocab_size=V,
        state_dim=D,
        flow=T.conditional_affine_coupling(D, context_dim=D + H, hidden_dims=[16]),
        embed_dim=4,
        rnn_hidden=H,
    )
    batch = batch_of(WORDS)
    train(model, guide, batch, loss=Trace_ELBO(), steps=150, lr=0.02)
    return model, guide, batch


def test_iwae_increases_with_k_above_the_elbo(trained):
    """E[ELBO] = E[IWAE_1] <= E[IWAE_8] <= E[IWAE_64], and the guide is imperfect after 150 steps.

    Each bound (summed over the batch) is averaged over 200 independent estimates, with independent draws
    for each K. No step up in K may lose more than three standard errors, and IWAE_64 must exceed the
    ELBO by more than 0.1 nats and three standard errors.
    """
    model, guide, batch = trained
    means, stderrs = [], []
    for k in (1, 8, 64):
        est = iwae(model, guide, batch.ids, batch.mask, num_particles=k, repeats=200).sum(-1)  # (R,)
        means.append(est.mean().item())
        stderrs.append(est.std().item() / math.sqrt(len(est)))
    for lo, hi, se_lo, se_hi in zip(means, means[1:], stderrs, stderrs[1:], strict=False):
        assert hi > lo - 3 * math.hypot(se_lo, se_hi), (means, stderrs)
    assert means[-1] - means[0] > max(0.1, 3 * math.hypot(stderrs[0], stderrs[-1])), (means, stderrs)


def test_iwae_with_many_particles_matches_the_prior_estimate_of_log_q(trained):
    """Two independent estimators of log q(w) agree: IWAE with the guide (K=4000) and prior trajectories.

    They only agree if the model scores the guide's states with the right density (through f^{-1} and its
    log-determinant) and the guide scores its own draws right. Each word's two estimates (the library's
    :func:`guide_word_log_probs` and :func:`prior_word_log_probs`) must agree within four combined standard
    errors, plus 0.01 nats for the O(1/K) downward bias of log-mean estimates that the errors leave out.
    """
    model, guide, _ = trained
    words = [VOCAB.encode(w) for w in WORDS]
    by_guide = per_word(
        guide_word_log_probs(model, guide, words, num_samples=4000, batch_size=len(words), progress=False)
    )
    by_prior = per_word(
        prior_word_log_probs(model, words, num_samples=40000, chunk_size=10000, progress=False)
    )
    for word, (log_q_guide, se_guide), (log_q_prior, se_prior) in zip(WORDS, by_guide, by_prior, strict=True):
        tolerance = 4 * math.hypot(se_guide, se_prior) + 0.01
        assert abs(log_q_guide - log_q_prior) < tolerance, (word, by_guide, by_prior)


@pytest.mark.slow
def test_two_continuations_are_fitted():
    """The paper's picture of two continuations: words "ab" (p = 0.7) and "ba" (p = 0.3).

    The state must split at t = 1 and remember which way it went. After 3000 IWAE (K=32) steps, log q(w)
    estimated by IWAE with the guide (K = 10,000, two repeats averaged) is within 0.1 nats of log p(w)
    for both words, and so is the independent estimate from 40,000 prior trajectories. (The plain ELBO
    gets stuck with the states unused on this task: q(w) uniform over a, b, EOS at every step.)
    """
    vocab = Vocabulary("ab")
    words, probs = ["ab", "ba"], torch.tensor([0.7, 0.3], dtype=torch.float64)
    train_batch = pad_batch([vocab.encode(w) for w in (["ab"] * 7 + ["ba"] * 3) * 4])
    model = DSSM(vocab_size=len(vocab), state_dim=4, flow="triangular", flow_hidden=32, emitter_hidden=32)
    guide = GaussianGuide(vocab_size=len(vocab), state_dim=4, embed_dim=8, rnn_hidden=16)
    svi = SVI(
        model,
        guide,
        pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.999}),
        RenyiELBO(alpha=0, num_particles=32, vectorize_particles=True),
    )
    for _ in range(3000):
        svi.step(train_batch.ids, train_batch.mask)

    batch = pad_batch([vocab.encode(w) for w in words])
    by_guide = iwae(model, guide, batch.ids, batch.mask, num_particles=10000, repeats=2).mean(0)  # (2,)
    by_prior = prior_word_log_probs(
        model, [vocab.encode(w) for w in words], num_samples=40000, chunk_size=10000, progress=False
    ).log_q
    assert torch.allclose(by_guide, probs.log(), atol=0.1), by_guide.exp()
    assert torch.allclose(by_prior, probs.log(), atol=0.1), by_prior.exp()
