"""Professor forcing: the direction of the adversarial term and what the discriminator reads."""

from __future__ import annotations

import pytest
import torch
from pyro.infer import Trace_ELBO

from pyroseq.data.batch import pad_batch
from pyroseq.guides import empty_guide
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
    Trace_ELBO().differentiable_loss(model, empty_guide, batch.ids, batch.mask).backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.optimised_parameters()]


def discriminator_says_teacher(model: ProfessorForcing, batch, seed: int, run: str) -> float:
    """The mean D(b) = P(teacher-forced) over the batch's teacher-forced run or its free run ``seed``."""
    with torch.no_grad():
        if run == "free":
            torch.manual_seed(seed)
            outputs, logits, lengths = model._free_running(*batch.ids.shape)
        else:
            (outputs, logits), lengths = model._teacher_forced(batch.ids), batch.lengths
        return torch.sigmoid(model.discriminator(model._behaviour(outputs, logits), lengths)).mean().item()


@pytest.mark.parametrize("term", ["free", "teacher"])
def test_adversarial_terms_push_the_discriminator_the_right_way(term, batch):
    """A small step down one adversarial term's own gradient raises D(free run), the probability that the
    discriminator takes the free run for teacher-forced (the term -log D(b_free)), or lowers D(teacher)
    (the optional term -log(1 - D(b_teacher))).

    Each term's gradient is the difference of the -ELBO's gradients with and without it (one seed, so the
    same free run); the free run is the same draw before and after (a step too small to change its symbols).
    """
    model = professor()
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
