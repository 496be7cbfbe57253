"""Tests of the teacher-forced baselines: RNNLM, scheduled sampling and professor forcing."""

from __future__ import annotations

import json
import math
import warnings

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import Adam, ClippedAdam

from pyroseq.data.batch import pad_batch
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import CheckpointError, ConfigError
from pyroseq.guides import empty_guide
from pyroseq.models.professor import ProfessorForcing
from pyroseq.models.rnn import RNNLM
from pyroseq.models.schedules import TeacherSchedule

V = 8  # PAD, BOS, EOS and five symbols


@pytest.fixture
def batch():
    return pad_batch([[3, 4, 5, 2], [6, 2], [7, 7, 3, 4, 5, 2], [4, 3, 2]])


def teacher_forced_nll(model: RNNLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The exact NLL of the batch, computed with plain torch."""
    B, T = ids.shape
    inputs = torch.cat([torch.full((B, 1), Vocabulary.bos_id), ids[:, :-1]], dim=1)
    h0 = model.initial_hidden.reshape(-1, 1, model.state_dim).expand(-1, B, -1).contiguous()
    hidden = (h0[: model.num_layers], h0[model.num_layers :]) if model.cell == "lstm" else h0
    outputs, _ = model.rnn(model.embed(inputs), hidden)
    logits = model.emitter(outputs)
    logits[..., [Vocabulary.pad_id, Vocabulary.bos_id]] = float("-inf")
    return F.cross_entropy(logits[mask], ids[mask], reduction="sum")


# RNNLM: the deterministic Pyro model


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_elbo_is_exact_nll(cell, num_layers, batch):
    model = RNNLM(vocab_size=V, cell=cell, num_layers=num_layers, state_dim=6, embed_dim=5)
    with torch.no_grad():
        model.initial_hidden.normal_()  # a non-zero learned h_0 must enter the likelihood too
    loss = Trace_ELBO().loss(model, empty_guide, batch.ids, batch.mask)
    nll = teacher_forced_nll(model, batch.ids, batch.mask).item()
    assert loss == pytest.approx(nll, rel=1e-5)
    assert loss == pytest.approx(-model.log_prob(batch.ids, batch.mask).sum().item(), rel=1e-5)


def test_model_sites_and_parameters(batch):
    model = RNNLM(vocab_size=V, cell="lstm", num_layers=2)
    trace = poutine.trace(model).get_trace(batch.ids, batch.mask)
    samples = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    observed = [n for n, s in trace.nodes.items() if s["type"] == "sample" and s["is_observed"]]
    params = {n for n, s in trace.nodes.items() if s["type"] == "param"}
    assert samples == ["seqs"]  # the plate only: no latent sites
    assert observed == [f"w_{t}" for t in range(1, batch.ids.shape[1] + 1)]
    assert trace.nodes["w_1"]["cond_indep_stack"][0].name == "seqs"
    # every parameter is a Pyro param, so SVI trains all of them
    assert params == {f"{model._pyro_name}.{n}" for n, _ in model.named_parameters()}


def test_svi_trains_every_parameter(batch):
    model = RNNLM(vocab_size=V)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    svi = SVI(model, empty_guide, Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(batch.ids, batch.mask)
    for n, p in model.named_parameters():
        assert not torch.equal(p, before[n]), n


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_unrolled_equals_teacher_forced(cell, num_layers, batch):
    H = 6
    model = RNNLM(vocab_size=V, cell=cell, num_layers=num_layers, state_dim=H)
    with torch.no_grad():
        model.initial_hidden.normal_()
    B, T = batch.ids.shape
    state = model.initial_state(B)
    assert state.shape == (B, (2 if cell == "lstm" else 1) * num_layers * H)
    prev = torch.full((B,), Vocabulary.bos_id)
    _, expected = model._teacher_forced(batch.ids)
    for t in range(T):
        logits, state = model.step(state, prev)
        assert logits.shape == (B, V) and state.shape[0] == B
        torch.testing.assert_close(logits, expected[:, t])
        prev = batch.ids[:, t]


def test_generation_draws_valid_ids():
    model = RNNLM(vocab_size=V)
    mask = torch.ones(16, 7, dtype=torch.bool)
    draws = Predictive(model, num_samples=4)(None, mask)
    assert set(draws) == {f"w_{t}" for t in range(1, 8)}
    ids = torch.stack([draws[f"w_{t}"] for t in range(1, 8)], dim=-1)  # (4, 16, 7)
    assert ids.shape == (4, 16, 7)
    assert ids.min() >= Vocabulary.eos_id and ids.max() < V  # never PAD or BOS
    assert len(ids.unique()) > 1


def test_constructor_round_trips_through_json(batch):
    kwargs = {"vocab_size": V, "cell": "lstm", "state_dim": 5, "embed_dim": 3, "num_layers": 2}
    kwargs["schedule"] = {"kind": "linear", "c": 0.01}
    model = RNNLM(**kwargs)
    rebuilt = RNNLM(**json.loads(json.dumps(kwargs)))
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(batch.ids, batch.mask), model.log_prob(batch.ids, batch.mask))


def test_zero_initial_state_is_not_a_parameter(batch):
    model = RNNLM(vocab_size=V, learned_initial_state=False)
    assert "initial_hidden" not in dict(model.named_parameters())
    assert torch.equal(model.initial_state(3), torch.zeros(3, 16))
    assert Trace_ELBO().loss(model, empty_guide, batch.ids, batch.mask) == pytest.approx(
        teacher_forced_nll(model, batch.ids, batch.mask).item(), rel=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocab_size": 3}, "vocab_size"),
        ({"vocab_size": V, "cell": "rnn"}, "cell"),
        ({"vocab_size": V, "state_dim": 0}, "state_dim"),
        ({"vocab_size": V, "embed_dim": 2.5}, "embed_dim"),
        ({"vocab_size": V, "num_layers": True}, "num_layers"),
        ({"vocab_size": V, "learned_initial_state": "yes"}, "learned_initial_state"),
        ({"vocab_size": V, "schedule": {"kind": "cosine"}}, "cosine"),
    ],
)
def test_rnnlm_rejects_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RNNLM(**kwargs)


# Scheduled sampling


@pytest.mark.parametrize(
    "config, step, expected",
    [
        ({"kind": "constant", "p": 0.3}, 1000, 0.3),
        ({"kind": "linear", "c": 0.01}, 0, 1.0),
        ({"kind": "linear", "c": 0.01}, 30, 0.7),
        ({"kind": "linear", "k": 0.9, "c": 0.01, "eps_min": 0.2}, 30, 0.6),
        ({"kind": "linear", "k": 0.9, "c": 0.01, "eps_min": 0.2}, 500, 0.2),
        ({"kind": "exp", "k": 0.99}, 100, 0.99**100),
        ({"kind": "exp", "k": 0.5, "eps_min": 0.1}, 2, 0.25),
        ({"kind": "exp", "k": 0.5, "eps_min": 0.1}, 10, 0.1),
        ({"kind": "exp", "k": 0.5, "eps_min": 1.0}, 3, 1.0),  # the closed end of [0, 1]: always teach
        ({"kind": "invsigmoid", "k": 10}, 0, 10 / 11),
        ({"kind": "invsigmoid", "k": 10}, 50, 10 / (10 + math.exp(5))),
        ({"kind": "invsigmoid", "k": 1}, 10**6, 0.0),
    ],
)
def test_teacher_schedule_formulas(config, step, expected):
    schedule = TeacherSchedule.from_dict(config)
    assert schedule.teacher_prob(step) == pytest.approx(expected, abs=1e-12)
    assert TeacherSchedule.from_dict(schedule.to_dict()) == schedule


@pytest.mark.parametrize(
    "config, match",
    [
        ({"kind": "cosine"}, "unknown teacher schedule kind"),
        ({"kind": "exp"}, "needs the parameter 'k'"),
        ({"kind": "invsigmoid", "k": 10, "c": 1.0}, "not 'c'"),
        ({"kind": "linear", "c": 0.1, "slope": 1}, "unknown teacher schedule parameters"),
        ({"kind": "constant", "p": 1.5}, r"\[0, 1\]"),
        ({"kind": "linear", "c": -0.1}, "positive"),
        ({"kind": "exp", "k": 1.0}, r"\(0, 1\)"),
        ({"kind": "invsigmoid", "k": 0.5}, "at least 1"),
        ({"kind": "exp", "k": 0.9, "eps_min": -0.1}, "eps_min"),
        ({"kind": "exp", "k": 0.9, "eps_min": 1.1}, "eps_min"),
        ({"kind": "constant", "p": "1"}, "number"),
    ],
)
def test_teacher_schedule_rejects_bad_settings(config, match):
    with pytest.raises(ConfigError, match=match):
        TeacherSchedule.from_dict(config)


def test_train_hook_sets_teacher_prob(batch):
    model = RNNLM(vocab_size=V, schedule={"kind": "invsigmoid", "k": 10})
    assert model.teacher_prob == pytest.approx(10 / 11)
    assert model.train_hook(50, batch) == {"teacher_prob": pytest.approx(10 / (10 + math.exp(5)))}
    assert model.teacher_prob == pytest.approx(10 / (10 + math.exp(5)))
    assert RNNLM(vocab_size=V).train_hook(50, batch) == {}


@pytest.mark.parametrize("vectorize", [False, True])
def test_schedule_follows_plain_svi_steps(vectorize, batch):
    """Under plain SVI the model counts its own steps: one per SVI.step, however many particles it draws,
    none for evaluate_loss, and a loaded model continues from the saved step."""
    schedule = {"kind": "linear", "c": 0.1}
    model = RNNLM(vocab_size=V, schedule=schedule)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=vectorize, max_plate_nesting=1)
    svi = SVI(model, empty_guide, Adam({"lr": 0.01}), elbo)
    probs = []
    for _ in range(4):
        svi.step(batch.ids, batch.mask)
        probs.append(model.teacher_prob)
        svi.evaluate_loss(batch.ids, batch.mask)
    assert probs == pytest.approx([1.0, 0.9, 0.8, 0.7])
    assert model.extra_state_dict() == {"training_step": 3}

    pyro.clear_param_store()
    loaded = RNNLM(vocab_size=V, schedule=schedule)
    loaded.load_state_dict(model.state_dict())
    loaded.load_extra_state_dict(model.extra_state_dict())
    assert loaded.teacher_prob == pytest.approx(0.7)
    svi = SVI(loaded, empty_guide, Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(batch.ids, batch.mask)
    assert loaded.teacher_prob == pytest.approx(0.6)


# Every way a Pyro user steps an optimiser; each holds torch optimisers that write the parameters their own
# way (ClippedAdam through p.data, which no version counter sees).
PYRO_OPTIMISERS = {
    "Adam": lambda: Adam({"lr": 0.01}),
    "ClippedAdam": lambda: ClippedAdam({"lr": 0.01, "clip_norm": 10.0}),
    "SGD": lambda: pyro.optim.SGD({"lr": 0.01}),
    "RMSprop": lambda: pyro.optim.RMSprop({"lr": 0.01}),
    "ExponentialLR": lambda: pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.01}, "gamma": 0.9}
    ),
}


def stepped_model(kind: str) -> RNNLM:
    if kind == "scheduled":
        return RNNLM(vocab_size=V, schedule={"kind": "linear", "c": 0.1})
    return ProfessorForcing(vocab_size=V, state_dim=8, disc_hidden=8)


def discriminator_weights(model: RNNLM) -> list[torch.Tensor]:
    return (
        [p.detach().clone() for p in model.discriminator.parameters()]
        if hasattr(model, "discriminator_optimizer")
        else []
    )


def assert_three_steps_after_the_first(model: RNNLM, disc_before: list[torch.Tensor]) -> None:
    assert model.training_step == 3
    if isinstance(model, ProfessorForcing):  # one discriminator update per step after the first
        state = model.discriminator_optimizer.state_dict()["state"]
        assert state and all(s["step"] == 3 for s in state.values())
        assert not any(
            torch.equal(a, b) for a, b in zip(disc_before, model.discriminator.parameters(), strict=True)
        )
    else:
        assert model.teacher_prob == pytest.approx(0.7)


@pytest.mark.parametrize("optimiser", list(PYRO_OPTIMISERS))
@pytest.mark.parametrize("kind", ["scheduled", "professor"])
def test_steps_advance_under_every_pyro_optimiser(kind, optimiser, batch):
    """Four SVI steps are training steps 0..3 whatever the optimiser, without a warning."""
    model = stepped_model(kind)
    disc_before = discriminator_weights(model)
    svi = SVI(model, empty_guide, PYRO_OPTIMISERS[optimiser](), Trace_ELBO())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            svi.step(batch.ids, batch.mask)
    assert_three_steps_after_the_first(model, disc_before)


@pytest.mark.parametrize("kind", ["scheduled", "professor"])
def test_steps_advance_under_a_torch_optimiser_over_differentiable_loss(kind, batch):
    model = stepped_model(kind)
    disc_before = discriminator_weights(model)
    optimizer = torch.optim.Adam(model.optimised_parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            optimizer.zero_grad()
            Trace_ELBO().differentiable_loss(model, empty_guide, batch.ids, batch.mask).backward()
            optimizer.step()
    assert_three_steps_after_the_first(model, disc_before)


@pytest.mark.parametrize("advance", [True, False])
def test_a_hand_written_update_is_counted_by_advance_or_warns(advance, batch):
    """An update that is no torch optimiser's step: model.advance() counts it; without it the model sees
    the changed parameters, says so and counts the step anyway."""
    model = stepped_model("scheduled")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            loss = Trace_ELBO().differentiable_loss(model, empty_guide, batch.ids, batch.mask)
            grads = torch.autograd.grad(loss, list(model.parameters()))
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads, strict=True):
                    p -= 0.01 * g
            if advance:
                model.advance()
    messages = [str(w.message) for w in caught if "advance()" in str(w.message)]
    assert model.training_step == 3 and model.teacher_prob == pytest.approx(0.7)
    assert len(messages) == (0 if advance else 3)


@pytest.mark.parametrize("kind", ["scheduled", "professor"])
def test_training_in_eval_mode_warns(kind, batch):
    """load_run hands models back in eval mode, where scheduled sampling and professor forcing are off
    and the step does not advance: plain SVI on them then says so instead of silently teacher-forcing."""
    if kind == "scheduled":
        model = RNNLM(vocab_size=V, schedule={"kind": "linear", "c": 0.1})
    else:
        model = ProfessorForcing(vocab_size=V)
    svi = SVI(model, empty_guide, Adam({"lr": 0.01}), Trace_ELBO())
    model.eval()
    with pytest.warns(UserWarning, match=r"eval mode .* call model.train\(\)"):
        svi.step(batch.ids, batch.mask)
        svi.step(batch.ids, batch.mask)  # the parameters moved since the first pass: it is training
    svi.evaluate_loss(batch.ids, batch.mask)  # no gradients: evaluating in eval mode is what it is for
    model.train()
    svi.step(batch.ids, batch.mask)
    svi.step(batch.ids, batch.mask)
    assert model.training_step == 1


def test_evaluating_in_eval_mode_does_not_warn(batch):
    """Plain teacher forcing trains the same in eval mode; a scheduled model scored with gradients on but
    no optimiser step between passes (Trace_ELBO().loss) is being evaluated, not trained."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = RNNLM(vocab_size=V).eval()
        svi = SVI(model, empty_guide, Adam({"lr": 0.01}), Trace_ELBO())
        before = [p.detach().clone() for p in model.parameters()]
        svi.step(batch.ids, batch.mask)
        svi.step(batch.ids, batch.mask)
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))  # trained
        scheduled = RNNLM(vocab_size=V, schedule={"kind": "linear", "c": 0.1}).eval()
        for _ in range(2):
            Trace_ELBO().loss(scheduled, empty_guide, batch.ids, batch.mask)
        assert scheduled.teacher_prob == 1.0  # evaluating did not move the schedule


def test_trainer_steps_are_not_counted_twice(batch):
    from pyroseq.infer import Trainer

    model = RNNLM(vocab_size=V, schedule={"kind": "linear", "c": 0.1})
    trainer = Trainer(model, empty_guide, total_steps=10)
    probs = [trainer.step(batch)["teacher_prob"] for _ in range(3)]
    assert probs == pytest.approx([1.0, 0.9, 0.8])
    assert model.training_step == 2 and model.teacher_prob == pytest.approx(0.8)


def test_scheduled_sampling_with_teacher_prob_one_is_teacher_forcing(batch):
    model = RNNLM(vocab_size=V, cell="lstm")
    _, teacher = model._teacher_forced(batch.ids)
    _, scheduled = model._scheduled(batch.ids, 1.0)
    torch.testing.assert_close(scheduled, teacher)
    nll = teacher_forced_nll(model, batch.ids, batch.mask).item()
    model.train()
    model.teacher_prob = 1.0
    assert Trace_ELBO().loss(model, empty_guide, batch.ids, batch.mask) == pytest.approx(nll, rel=1e-5)


def test_scheduled_sampling_mixes_per_sequence():
    """At step 2 each sequence is fed w_1 with probability p + (1 - p) q(w_1 | BOS), independently."""
    model = RNNLM(vocab_size=V)
    data = pad_batch([[3, 4, 2]] * 2000)
    p = 0.3
    _, teacher = model._teacher_forced(data.ids)
    _, scheduled = model._scheduled(data.ids, p)
    fed_truth = torch.isclose(scheduled[:, 1], teacher[:, 1]).all(-1).float()
    q = torch.softmax(teacher[0, 0], -1)[3].item()
    expected = p + (1 - p) * q
    assert fed_truth.mean().item() == pytest.approx(
        expected, abs=4 * math.sqrt(expected * (1 - expected) / 2000)
    )


def test_scheduled_sampling_with_teacher_prob_zero_feeds_own_samples(batch):
    model = RNNLM(vocab_size=V, schedule={"kind": "constant", "p": 0.0})
    _, teacher = model._teacher_forced(batch.ids)
    _, scheduled = model._scheduled(batch.ids, 0.0)
    torch.testing.assert_close(scheduled[:, 0], teacher[:, 0])  # both start from BOS
    assert not torch.allclose(scheduled[:, 1:], teacher[:, 1:])
    nll = teacher_forced_nll(model, batch.ids, batch.mask).item()
    model.train()
    assert Trace_ELBO().loss(model, empty_guide, batch.ids, batch.mask) != pytest.approx(nll, rel=1e-3)
    model.eval()  # evaluation is always the exact, teacher-forced likelihood
    assert Trace_ELBO().loss(model, empty_guide, batch.ids, batch.mask) == pytest.approx(nll, rel=1e-5)


# Professor forcing


def professor(**kwargs) -> ProfessorForcing:
    return ProfessorForcing(**{"vocab_size": V, "state_dim": 8, "embed_dim": 8, "disc_hidden": 16, **kwargs})


def test_discriminator_separates_teacher_forced_from_free_running():
    model = professor(disc_lr=1e-2)
    # the data repeats one symbol; the untrained generator, left to itself, does not
    data = pad_batch([[3, 3, 3, 3, 3, 2]] * 16)
    figures = [model.train_hook(step, data) for step in range(60)]
    assert figures[0]["disc_accuracy"] < 0.8
    late = figures[-10:]
    assert sum(f["disc_accuracy"] for f in late) / len(late) > 0.95
    assert late[-1]["disc_loss"] < 0.2
    assert model.disc_accuracy == figures[-1]["disc_accuracy"]


def eos_only_or_never(model: ProfessorForcing, eos_logit: float) -> None:
    """Make every free-running step draw EOS (``eos_logit`` 50) or never draw it (-50)."""
    with torch.no_grad():
        model.emitter.weight.zero_()
        model.emitter.bias.zero_()
        model.emitter.bias[Vocabulary.eos_id] = eos_logit


@pytest.mark.parametrize("eos_logit, free_length", [(50.0, 1), (-50.0, None)])
def test_free_runs_are_cut_at_their_own_first_eos(eos_logit, free_length, batch):
    """The discriminator reads a free run up to min(its first EOS + 1, T), never up to the data's lengths,
    both when it is trained (train_hook) and in the generator's adversarial term (the model)."""
    model = professor()
    eos_only_or_never(model, eos_logit)
    B, T = batch.ids.shape
    expected = torch.full((B,), T if free_length is None else free_length)
    lengths_read = []
    model.discriminator.register_forward_pre_hook(lambda module, args: lengths_read.append(args[1].clone()))
    model.train_hook(0, batch)
    torch.testing.assert_close(lengths_read[-1], torch.cat([batch.lengths, expected]))  # teacher, free
    model.train()
    model.disc_accuracy = 0.9
    poutine.trace(model).get_trace(batch.ids, batch.mask)
    torch.testing.assert_close(lengths_read[-1], expected)


def test_free_run_lengths_follow_the_drawn_symbols():
    model = professor()
    drawn = []

    def record(t, logits_t):
        drawn.append(torch.distributions.Categorical(logits=logits_t).sample())
        return drawn[-1]

    torch.manual_seed(1)
    model._unroll(64, 6, record)  # the same draws as the free run below, recorded
    torch.manual_seed(1)
    _, _, lengths = model._free_running(torch.ones(64, 6, dtype=torch.bool))
    symbols = torch.stack(drawn, dim=1)  # (64, 6)
    for row, length in zip(symbols.tolist(), lengths.tolist(), strict=True):
        assert length == (row.index(Vocabulary.eos_id) + 1 if Vocabulary.eos_id in row else 6)
    assert len(set(lengths.tolist())) > 2  # the check saw runs of several lengths


def nll_gradients(model: ProfessorForcing, batch) -> dict[str, torch.Tensor]:
    model.zero_grad()
    teacher_forced_nll(model, batch.ids, batch.mask).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def svi_gradients(model: ProfessorForcing, batch) -> tuple[dict[str, torch.Tensor], poutine.Trace]:
    model.zero_grad()
    trace = poutine.trace(model).get_trace(batch.ids, batch.mask)
    Trace_ELBO().differentiable_loss(model, empty_guide, batch.ids, batch.mask).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, trace


@pytest.mark.parametrize("accuracy", [None, 0.5, 0.995])
def test_no_adversarial_gradient_outside_the_window(accuracy, batch):
    model = professor()
    model.train()
    model.disc_accuracy = accuracy
    grads, trace = svi_gradients(model, batch)
    assert "professor" not in trace.nodes
    expected = nll_gradients(model, batch)
    assert grads.keys() == expected.keys()
    assert not any(n.startswith("discriminator.") for n in grads)
    for n in expected:
        torch.testing.assert_close(grads[n], expected[n])


@pytest.mark.parametrize("free_running_term_only", [True, False])
def test_adversarial_factor_inside_the_window(free_running_term_only, batch):
    model = professor(free_running_term_only=free_running_term_only)
    model.train()
    model.disc_accuracy = 0.9
    grads, trace = svi_gradients(model, batch)
    assert trace.nodes["professor"]["fn"].batch_shape == (len(batch),)
    assert trace.nodes["professor"]["cond_indep_stack"][0].name == "seqs"
    assert not any(n.startswith("discriminator.") for n in grads)  # the discriminator stays fixed
    assert all(p.requires_grad for p in model.discriminator.parameters())
    expected = nll_gradients(model, batch)
    assert any(not torch.allclose(grads[n], expected[n]) for n in expected)
    model.eval()  # evaluation is the exact likelihood only
    assert "professor" not in poutine.trace(model).get_trace(batch.ids, batch.mask).nodes


def test_professor_trains_generator_and_discriminator_separately(batch):
    model = professor()
    model.train()
    generator = {id(p) for p in model.optimised_parameters()}
    disc = {id(p) for p in model.discriminator.parameters()}
    assert not generator & disc and len(generator) + len(disc) == len(list(model.parameters()))
    model.disc_accuracy = 0.9
    trace = poutine.trace(model).get_trace(batch.ids, batch.mask)
    params = {n for n, s in trace.nodes.items() if s["type"] == "param"}
    assert params == {f"{model._pyro_name}.{n}" for n, p in model.named_parameters() if id(p) in generator}

    disc_before = [p.detach().clone() for p in model.discriminator.parameters()]
    svi = SVI(model, empty_guide, Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(batch.ids, batch.mask)
    assert all(torch.equal(a, b) for a, b in zip(disc_before, model.discriminator.parameters(), strict=True))
    model.train_hook(0, batch)
    assert not all(
        torch.equal(a, b) for a, b in zip(disc_before, model.discriminator.parameters(), strict=True)
    )


def test_discriminator_follows_plain_svi_steps(batch):
    """Under plain SVI the model updates its discriminator once per SVI.step after the first (the first
    step trains the generator as the model stands), and never in evaluate_loss."""
    model = professor()
    disc = list(model.discriminator.parameters())

    def disc_state():
        return [p.detach().clone() for p in disc]

    svi = SVI(model, empty_guide, Adam({"lr": 0.01}), Trace_ELBO(num_particles=2))
    svi.step(batch.ids, batch.mask)
    assert model.disc_accuracy is None
    for step in range(1, 4):
        before = disc_state()
        svi.step(batch.ids, batch.mask)
        assert model.training_step == step and model.disc_accuracy is not None
        assert not any(torch.equal(a, b) for a, b in zip(before, disc, strict=True))
        state = model.extra_state_dict()["disc_optimizer"]["state"]
        assert all(s["step"] == step for s in state.values())  # one Adam step per SVI step
        before = disc_state()
        svi.evaluate_loss(batch.ids, batch.mask)
        assert all(torch.equal(a, b) for a, b in zip(before, disc, strict=True))


def test_professor_checkpoint_round_trip(batch):
    kwargs = {"vocab_size": V, "state_dim": 8, "adversarial_weight": 0.5, "accuracy_window": (0.7, 0.95)}
    model = ProfessorForcing(**kwargs)
    for step in range(3):
        model.train_hook(step, batch)
    rebuilt = ProfessorForcing(**json.loads(json.dumps(kwargs)))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.load_extra_state_dict(model.extra_state_dict())
    assert rebuilt.accuracy_window == (0.7, 0.95)
    assert rebuilt.disc_accuracy == model.disc_accuracy
    saved, loaded = model.extra_state_dict()["disc_optimizer"], rebuilt.extra_state_dict()["disc_optimizer"]
    for key, state in saved["state"].items():
        torch.testing.assert_close(loaded["state"][key]["exp_avg_sq"], state["exp_avg_sq"])
    with pytest.raises(CheckpointError, match="extra state"):
        rebuilt.load_extra_state_dict({})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"adversarial_weight": -1.0}, "adversarial_weight"),
        ({"disc_hidden": 0}, "disc_hidden"),
        ({"disc_lr": 0}, "disc_lr"),
        ({"accuracy_window": (0.9, 0.8)}, "accuracy_window"),
        ({"accuracy_window": 0.9}, "accuracy_window"),
        ({"free_running_term_only": 1}, "free_running_term_only"),
    ],
)
def test_professor_rejects_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        professor(**kwargs)


# Statistical: maximum likelihood by SVI recovers a known distribution


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_svi_fits_a_known_word_distribution(cell):
    """After SVI on i.i.d. batches, the exact log q(w) of every word is within 0.05 nats of log p(w).

    The tolerance holds the sampling noise of the final iterates (about 0.01-0.02 nats with batches of 8192
    words) with room to spare; an untrained model is off by about 1 nat.
    """
    vocab = Vocabulary("ab")
    p = {"a": 0.5, "ab": 0.25, "ba": 0.15, "bb": 0.1}
    words = pad_batch([vocab.encode(w) for w in p])
    probs = torch.tensor(list(p.values()))
    model = RNNLM(vocab_size=len(vocab), cell=cell, state_dim=8, embed_dim=8)
    steps = 200
    svi = SVI(model, empty_guide, ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / steps)}), Trace_ELBO())
    for _ in range(steps):
        idx = torch.multinomial(probs, 8192, replacement=True)
        svi.step(words.ids[idx], words.mask[idx])
    with torch.no_grad():
        log_q = model.log_prob(words.ids, words.mask)
    assert (log_q - probs.log()).abs().max().item() < 0.05
