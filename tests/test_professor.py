"""Professor forcing: the direction of the adversarial term and what the discriminator reads, on symbols and
on frames (multi-hot piano-roll frames with Bernoulli keys, and real vectors)."""

from __future__ import annotations

import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyroseq.data.batch import pad_batch
from pyroseq.data.polyphonic import FrameBatch, pad_frames
from pyroseq.guides import empty_guide
from pyroseq.infer import Trainer
from pyroseq.models.professor import Discriminator, ProfessorForcing

V = 8  # PAD, BOS, EOS and five symbols


@pytest.fixture
def batch():
    return pad_batch([[3, 4, 5, 2], [6, 2], [7, 7, 3, 4, 5, 2], [4, 3, 2]] * 4)


def professor(**kwargs) -> ProfessorForcing:
    return ProfessorForcing(**{"vocab_size": V, "state_dim": 8, "embed_dim": 8, "disc_hidden": 16, **kwargs})


def generator_gradients(model: ProfessorForcing, batch, seed: int) -> list[torch.Tensor]:
    """Gradients of the model's -ELBO (NLL plus the adversarial term) for the generator, one seed."""
    model.zero_grad()
    torch.manual_seed(seed)
    Trace_ELBO().differentiable_loss(model, empty_guide, batch.observations, batch.mask).backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.optimised_parameters()]


def discriminator_says_teacher(model: ProfessorForcing, batch, seed: int, run: str) -> float:
    """The mean D(b) = P(teacher-forced) over the batch's teacher-forced run or its free run ``seed``."""
    with torch.no_grad():
        if run == "free":
            torch.manual_seed(seed)
            outputs, logits, lengths = model._free_running(batch.mask)
        else:
            (outputs, logits), lengths = model._teacher_forced(batch.observations), batch.lengths
        return torch.sigmoid(model.discriminator(model._behaviour(outputs, logits), lengths)).mean().item()


@pytest.mark.parametrize("kind", ["symbols", "frames"])
@pytest.mark.parametrize("term", ["free", "teacher"])
def test_adversarial_terms_push_the_discriminator_the_right_way(term, kind, batch, rolls):
    """A small step down one adversarial term's own gradient raises D(free run), the probability that the
    discriminator takes the free run for teacher-forced (the term -log D(b_free)), or lowers D(teacher)
    (the optional term -log(1 - D(b_teacher))).

    Each term's gradient is the difference of the -ELBO's gradients with and without it (one seed, so the
    same free run); the free run is the same draw before and after (a step too small to change its symbols;
    on frames, to change more than a few of its keys).
    """
    if kind == "frames":
        batch = FrameBatch(rolls.frames.repeat(4, 1, 1), rolls.mask.repeat(4, 1), rolls.lengths.repeat(4))
    model = professor() if kind == "symbols" else frame_professor()
    for step in range(5):  # a discriminator that already tells the runs apart somewhat
        model.train_hook(step, batch)
    model.train()
    model.disc_accuracy = None  # outside the window: the NLL only
    nll_only = generator_gradients(model, batch, seed=1)
    model.disc_accuracy = 0.9  # inside the window: the term is on
    free_term = generator_gradients(model, batch, seed=1)
    model.free_running_term_only = False
    both_terms = generator_gradients(model, batch, seed=1)
    with_term, without = (free_term, nll_only) if term == "free" else (both_terms, free_term)
    gradient = [a - b for a, b in zip(with_term, without, strict=True)]
    norm = torch.sqrt(sum((g**2).sum() for g in gradient))
    assert norm > 0
    before = discriminator_says_teacher(model, batch, 1, term)
    with torch.no_grad():
        for p, g in zip(model.optimised_parameters(), gradient, strict=True):
            p.sub_(0.05 * g / norm)  # descend the -ELBO along this term
    after = discriminator_says_teacher(model, batch, 1, term)
    if term == "free":
        assert after > before + 1e-3
    else:
        assert after < before - 1e-3


def test_discriminator_reads_both_directions_up_to_each_length():
    """D equals a reference: a forward GRU over b_1..b_L and a backward GRU over b_L..b_1 (L each sequence's
    own length), their final states concatenated into the MLP; steps past L change nothing."""
    torch.manual_seed(0)
    disc = Discriminator(behaviour_dim=5, hidden_dim=6)
    behaviour = torch.randn(3, 7, 5)
    lengths = torch.tensor([7, 2, 4])
    forward_gru = torch.nn.GRU(5, 6, batch_first=True)
    backward_gru = torch.nn.GRU(5, 6, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(forward_gru, name).copy_(getattr(disc.rnn, name))
            getattr(backward_gru, name).copy_(getattr(disc.rnn, name + "_reverse"))
        expected = []
        for b, L in zip(behaviour, lengths.tolist(), strict=True):
            _, last_forward = forward_gru(b[None, :L])
            _, last_backward = backward_gru(b[None, :L].flip(1))
            expected.append(disc.mlp(torch.cat([last_forward[0, 0], last_backward[0, 0]])))
        got = disc(behaviour, lengths)
        torch.testing.assert_close(got, torch.cat(expected))
        padded = behaviour.clone()
        padded[1, 2:] = torch.randn(5, 5)
        torch.testing.assert_close(disc(padded, lengths), got)


# Frames: no EOS, so the free run lasts as long as the data; the discriminator reads the emission's parameters

KEYS = 88  # a piano roll's frame
H = 8  # the generator's state


def frame_professor(emission: str = "bernoulli", **kwargs) -> ProfessorForcing:
    sizes = {"state_dim": H, "embed_dim": 8, "disc_hidden": 16}
    return ProfessorForcing(**{"emission": emission, "obs_dim": KEYS, **sizes, **kwargs})


@pytest.fixture
def rolls():
    g = torch.Generator().manual_seed(0)
    return pad_frames([torch.randint(0, 2, (n, KEYS), generator=g).float() for n in (5, 2, 4, 3)])


def read_by_discriminator(model: ProfessorForcing) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Record every call of the model's discriminator: ``(behaviour, lengths, logits)``."""
    calls = []

    def record(module, args, logits):
        calls.append((args[0].detach().clone(), args[1].clone(), logits.detach().clone()))

    model.discriminator.register_forward_hook(record)
    return calls


@pytest.mark.parametrize("emission", ["bernoulli", "normal"])
def test_on_frames_the_discriminator_reads_states_and_the_laws_parameters(emission, rolls):
    """b_t = [h_t, sigmoid(g(h_t))] (88 key probabilities; a Normal's location and scale), teacher-forced and
    free-running, each read up to the data's lengths, in the discriminator's update and the generator's
    term."""
    model = frame_professor(emission)
    data = (
        rolls.frames if emission == "bernoulli" else torch.randn(rolls.frames.shape) * rolls.mask[..., None]
    )
    batch = FrameBatch(data, rolls.mask, rolls.lengths)
    B, T = batch.mask.shape
    width = H + (KEYS if emission == "bernoulli" else 2 * KEYS)
    calls = read_by_discriminator(model)
    model.train_hook(0, batch)
    behaviour, lengths, _ = calls[-1]
    assert behaviour.shape == (2 * B, T, width)  # teacher-forced, then free-running
    torch.testing.assert_close(lengths, torch.cat([batch.lengths, batch.lengths]))
    with torch.no_grad():
        outputs, params = model._teacher_forced(batch.frames)
        if emission == "bernoulli":
            expected = torch.sigmoid(params)
        else:
            expected = torch.cat([params, model.emitter.log_scale.exp().expand(params.shape)], dim=-1)
    torch.testing.assert_close(behaviour[:B], torch.cat([outputs, expected], dim=-1))
    if emission == "bernoulli":  # the free run's too are probabilities, not logits or draws
        assert ((behaviour[B:, :, H:] > 0) & (behaviour[B:, :, H:] < 1)).all()

    model.train()
    model.disc_accuracy = 0.9
    poutine.trace(model).get_trace(batch.frames, batch.mask)
    behaviour, lengths, _ = calls[-1]
    assert behaviour.shape == (B, T, width)
    torch.testing.assert_close(lengths, batch.lengths)


def test_the_free_run_on_frames_feeds_the_models_own_draws(rolls):
    """After a silent first frame each step is fed a whole frame the model drew itself (0/1 keys, not the
    data, not probabilities), and its behaviour is that of the teacher-forced run on those frames."""
    model = frame_professor()
    fed = []
    model.embed.register_forward_pre_hook(
        lambda m, args: fed.append(args[0].clone()) if args[0].dim() == 2 else None
    )
    calls = read_by_discriminator(model)
    model.train_hook(0, rolls)
    B, T = rolls.mask.shape
    assert len(fed) == T and not fed[0].any()  # step by step, from a silent frame
    drawn = torch.stack(fed[1:], dim=1)  # (B, T - 1, F): what steps 2..T were fed
    assert ((drawn == 0) | (drawn == 1)).all()
    assert not torch.equal(drawn, rolls.frames[:, :-1])
    with torch.no_grad():
        outputs, params = model._teacher_forced(torch.cat([drawn, torch.zeros(B, 1, KEYS)], dim=1))
    torch.testing.assert_close(calls[-1][0][B:], torch.cat([outputs, torch.sigmoid(params)], dim=-1))


def test_padded_frames_never_reach_the_discriminators_verdict(rolls):
    """Each sequence twice in one batch, the second with every key of its padded frames on: the verdicts on
    their teacher-forced behaviour are the same, in the discriminator's update and in the generator's term."""
    noisy = rolls.frames.masked_fill(~rolls.mask[..., None], 1.0)
    both = FrameBatch(torch.cat([rolls.frames, noisy]), rolls.mask.repeat(2, 1), rolls.lengths.repeat(2))
    B = len(rolls)
    model = frame_professor(free_running_term_only=False)
    calls = read_by_discriminator(model)
    model.train_hook(0, both)
    model.train()
    model.disc_accuracy = 0.9
    poutine.trace(model).get_trace(both.frames, both.mask)
    (update, _, update_verdicts), _, (_, _, term_verdicts) = calls  # the update, then free, teacher terms
    assert not torch.equal(update[:B], update[B : 2 * B])  # the padding changed the behaviour
    torch.testing.assert_close(update_verdicts[:B], update_verdicts[B : 2 * B])
    torch.testing.assert_close(term_verdicts[:B], term_verdicts[B:])


def test_a_training_step_on_frames_updates_the_discriminator_and_the_generator(rolls):
    model = frame_professor()
    generator = [p.detach().clone() for p in model.optimised_parameters()]
    disc = [p.detach().clone() for p in model.discriminator.parameters()]
    figures = Trainer(model, empty_guide, total_steps=2).step(rolls)
    assert {"disc_accuracy", "disc_loss"} <= set(figures)
    assert not any(torch.equal(a, b) for a, b in zip(disc, model.discriminator.parameters(), strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(generator, model.optimised_parameters(), strict=True))


def test_on_frames_the_adversarial_term_reaches_the_generator_only(rolls):
    model = frame_professor(free_running_term_only=False)
    model.train()
    model.disc_accuracy = None  # outside the window: the NLL only
    nll_only = generator_gradients(model, rolls, seed=0)
    model.disc_accuracy = 0.9
    trace = poutine.trace(model).get_trace(rolls.frames, rolls.mask)
    assert trace.nodes["professor"]["fn"].batch_shape == (len(rolls),)
    with_term = generator_gradients(model, rolls, seed=0)
    assert any(not torch.allclose(a, b) for a, b in zip(with_term, nll_only, strict=True))
    assert all(p.grad is None for p in model.discriminator.parameters())
