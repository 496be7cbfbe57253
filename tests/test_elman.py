"""Tests of the guide's length-aware Elman RNN (pyroseq.guides.elman)."""

from __future__ import annotations

import pytest
import torch

from pyroseq.errors import DataError
from pyroseq.flows.trajectory import tracing
from pyroseq.guides import LengthAwareRNN
from pyroseq.guides.elman import _ElmanSteps

LENGTHS = torch.tensor([3, 9, 1, 5, 9, 2])  # not sorted, two full rows, a row of one step


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), 9, 7, dtype=torch.double, generator=generator, requires_grad=True)
    hx = torch.randn(1, len(LENGTHS), 11, dtype=torch.double, generator=generator, requires_grad=True)
    return x, hx


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_it_is_nn_rnn_on_each_sequence_alone_outputs_last_states_and_every_gradient(nonlinearity):
    """Each row equals ``nn.RNN`` run on that sequence without padding, and so do the gradients of a loss
    of the outputs and final states with respect to every parameter, the inputs and the initial state."""
    torch.manual_seed(0)
    rnn = LengthAwareRNN(7, 11, nonlinearity=nonlinearity).double()
    x, hx = _inputs()
    weights = torch.randn(len(LENGTHS), 9, 11, dtype=torch.double)
    out, last = rnn(x, hx, lengths=LENGTHS)
    ((out * weights).sum() + last.square().sum()).backward()
    ours = [p.grad.clone() for p in rnn.parameters()] + [x.grad.clone(), hx.grad.clone()]
    rnn.zero_grad()
    x.grad = hx.grad = None
    reference = 0
    for b, n in enumerate(LENGTHS.tolist()):
        alone, alone_last = torch.nn.RNN.forward(rnn, x[b : b + 1, :n], hx[:, b : b + 1])
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(last[0, b], alone_last[0, 0], atol=1e-12, rtol=0)
        assert bool(out[b, n:].eq(0).all())  # zero after the end
        reference = reference + (alone * weights[b : b + 1, :n]).sum() + alone_last.square().sum()
    reference.backward()
    theirs = [p.grad.clone() for p in rnn.parameters()] + [x.grad.clone(), hx.grad.clone()]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_the_steps_gradient_passes_gradcheck():
    """The hand-written backward of the recurrence against finite differences (float64), on rows that end
    at different steps (running counts 3, 3, 2, 1)."""
    torch.manual_seed(1)
    projected = torch.randn(4, 3, 5, dtype=torch.double, requires_grad=True)
    h_0 = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    weight = (0.5 * torch.randn(5, 5, dtype=torch.double)).requires_grad_()
    for nonlinearity in ("tanh", "relu"):
        assert torch.autograd.gradcheck(
            lambda u, h, w, nl=nonlinearity: _ElmanSteps.apply(u, h, w, [3, 3, 2, 1], nl),
            (projected, h_0, weight),
        )


def test_without_lengths_it_is_nn_rnn_initialised_and_called_the_same():
    torch.manual_seed(3)
    ours = LengthAwareRNN(7, 11, nonlinearity="relu")
    torch.manual_seed(3)
    theirs = torch.nn.RNN(7, 11, nonlinearity="relu", batch_first=True)
    for (name, a), (other, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert name == other and torch.equal(a, b)  # a checkpoint of either loads into the other
    x = torch.randn(2, 5, 7)
    for a, b in zip(ours(x), theirs(x), strict=True):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_trace_steps_the_padded_batch_so_it_holds_for_other_lengths():
    """Under ``torch.jit.trace`` the running counts of the traced batch would be fixed into the graph; the
    module runs ``nn.RNN`` on the padded batch there, so the trace is right for a batch of other lengths."""
    torch.manual_seed(4)
    rnn = LengthAwareRNN(3, 4, nonlinearity="relu")
    x = torch.randn(3, 6, 3)

    class Outputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, lengths):
            return self.rnn(x, lengths=lengths)[0]

    traced = torch.jit.trace(Outputs(), (x, torch.tensor([6, 2, 4])), check_trace=False)
    other = torch.tensor([1, 6, 3])
    torch.testing.assert_close(traced(x, other), rnn(x, lengths=other)[0])


@pytest.mark.parametrize("stepped", [True, False], ids=["by length", "padded"])
def test_a_row_of_no_steps_is_zero_and_keeps_its_initial_state(stepped, monkeypatch):
    """A row that is all padding (a hand-made batch may have one): zero outputs, its ``hx`` as final state,
    on both paths (the padded one runs under tracing and on a GPU)."""
    monkeypatch.setattr(LengthAwareRNN, "_steps_lengths", lambda self, input: stepped)
    torch.manual_seed(5)
    rnn = LengthAwareRNN(3, 4, nonlinearity="relu")
    x, hx = torch.randn(3, 5, 3), torch.randn(1, 3, 4)
    out, last = rnn(x, hx, lengths=torch.tensor([5, 0, 2]))
    assert bool(out[1].eq(0).all()) and torch.equal(last[0, 1], hx[0, 1])
    alone, alone_last = torch.nn.RNN.forward(rnn, x[2:, :2], hx[:, 2:])
    torch.testing.assert_close(out[2, :2], alone[0])
    torch.testing.assert_close(last[0, 2], alone_last[0, 0])


def test_tracing_is_known_without_torch_compilers_flag(monkeypatch):
    """torch before 2.3 has no ``torch.compiler.is_compiling``: the check still answers."""
    monkeypatch.delattr(torch.compiler, "is_compiling")
    assert tracing() is False


@pytest.mark.parametrize("lengths", [[3, -1], [3, 7], [3]])
def test_lengths_outside_zero_to_t_are_refused(lengths):
    with pytest.raises(DataError, match="lengths must be"):
        LengthAwareRNN(3, 4)(torch.randn(2, 6, 3), lengths=torch.tensor(lengths))
