"""The guide's plain (Elman) RNN, stepped over each sequence's own length on the CPU.

    h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),    phi = relu or tanh

:class:`LengthAwareRNN` is :class:`torch.nn.RNN` (one layer, one direction, ``batch_first``): the same
parameters, initialised the same way, and without ``lengths`` the same call. Given ``lengths`` on the CPU,
it sorts the rows by length and at step ``t`` multiplies only the rows still running, the way a packed
sequence would be stepped; its backward runs the recurrence on those rows as well and forms the weight
gradient ``dW_hh = sum_t g_t^T h_{t-1}`` in one matrix product over the real steps, where autograd through
:class:`torch.nn.RNN` accumulates one ``(H, H)`` product per step. A chorale batch of the Deep Markov
Model's sizes is about half padding; there it took the DMM preset's epoch from 0.55 to 0.51 of the time of
Pyro's ``examples/dmm.py`` on one CPU thread, where packing the sequence for ``nn.RNN`` had saved nothing
(``docs/models.md``).

The outputs are those of ``nn.RNN`` on every real step, up to the rounding of a matrix product over fewer
rows; after a sequence's end they are zero. On a GPU (cuDNN), under ``torch.jit`` tracing (which would fix
the lengths of the traced batch) or ``torch.compile``, it runs ``nn.RNN`` on the padded batch instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from pyroseq.errors import DataError
from pyroseq.flows.trajectory import tracing

__all__ = ["LengthAwareRNN"]


class LengthAwareRNN(nn.RNN):
    """A one-layer ``batch_first`` :class:`torch.nn.RNN` that skips each sequence's padding, given its length.

    Args:
        input_size: the size of each input vector.
        hidden_size: H, the size of the hidden state.
        nonlinearity: ``"relu"`` (Pyro's Deep Markov Model's) or ``"tanh"``.

    Example:
        >>> rnn = LengthAwareRNN(3, 5, nonlinearity="relu")
        >>> x, lengths = torch.randn(2, 4, 3), torch.tensor([4, 2])
        >>> out, last = rnn(x, lengths=lengths)
        >>> tuple(out.shape), tuple(last.shape)
        ((2, 4, 5), (1, 2, 5))
        >>> bool(out[1, 2:].eq(0).all())  # after the second sequence's end
        True
        >>> alone, _ = rnn(x[1:, :2])  # nn.RNN's call on that sequence alone
        >>> torch.allclose(out[1, :2], alone.squeeze(0), atol=1e-6)
        True
    """

    def __init__(self, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh") -> None:
        super().__init__(input_size, hidden_size, nonlinearity=nonlinearity, batch_first=True)

    def forward(self, input: Tensor, hx: Tensor | None = None, *, lengths: Tensor | None = None):  # noqa: A002
        """``(output (B, T, H), h_n (1, B, H))`` for ``input (B, T, I)`` and ``hx (1, B, H)`` (zeros if None).

        Given ``lengths``, ``output`` is zero after each row's length and ``h_n`` holds each row's hidden
        state after its last real step (``hx`` for a row of no steps). Only first derivatives pass through
        the stepped recurrence (its backward is not itself differentiable).

        Args:
            input: the right-padded sequences.
            hx: the initial hidden state, as for :class:`torch.nn.RNN`.
            lengths: ``(B,)`` the real steps of each row, from 0 to T; None steps every row over all T steps
                (``nn.RNN``'s call).
        """
        if lengths is None:
            return super().forward(input, hx)
        B, T, _ = input.shape
        if lengths.shape != (B,) or not bool(((lengths >= 0) & (lengths <= T)).all()):
            raise DataError(f"lengths must be (B,) = ({B},) counts from 0 to T = {T}, got {lengths.tolist()}")
        initial = input.new_zeros(1, B, self.hidden_size) if hx is None else hx  # (1, B, H)
        started = (lengths > 0).view(1, B, 1)  # rows of no steps keep their initial state
        ends = (lengths - 1).clamp(min=0)  # (B,), each row's last real step
        if not self._steps_lengths(input):
            output, _ = super().forward(input, hx)  # (B, T, H), stepped through the padding too
            last = output.gather(1, ends.view(B, 1, 1).expand(B, 1, self.hidden_size)).transpose(0, 1)
            running = torch.arange(T, device=input.device) < lengths.unsqueeze(-1)  # (B, T)
            return output * running.unsqueeze(-1), torch.where(started, last, initial)
        order = torch.argsort(lengths, descending=True, stable=True)  # (B,), longest first
        # the rows running at each step: a prefix of the sorted batch
        running = (lengths.unsqueeze(0) > torch.arange(T, device=lengths.device).unsqueeze(1)).sum(1).tolist()
        inputs = input[order].transpose(0, 1)  # (T, B, I), time first
        bias = self.bias_ih_l0 + self.bias_hh_l0
        projected = nn.functional.linear(inputs, self.weight_ih_l0, bias)  # (T, B, H)
        states = _ElmanSteps.apply(
            projected, initial[0][order], self.weight_hh_l0, running, self.nonlinearity
        )
        rank = torch.empty_like(order)  # row b of the batch is row rank[b] of the sorted one
        rank[order] = torch.arange(B, device=order.device)
        output = states.transpose(0, 1)[rank]  # (B, T, H)
        return output, torch.where(started, states[ends, rank].unsqueeze(0), initial)

    def _steps_lengths(self, input: Tensor) -> bool:
        """Whether this call can step by length (else it runs ``nn.RNN`` on the padded batch)."""
        return input.device.type == "cpu" and input.shape[1] > 0 and not tracing()


class _ElmanSteps(torch.autograd.Function):
    """``h_t = phi(u_t + h_{t-1} W^T)`` on the first ``running[t]`` rows at step t, time first.

    ``u (T, B, H)`` holds the input's projection and both biases, ``h_0 (B, H)``, ``W (H, H)``; rows after the
    running ones are zero in the result and receive no gradient.
    """

    @staticmethod
    def forward(ctx, projected: Tensor, h_0: Tensor, weight: Tensor, running: list[int], nonlinearity: str):
        T, B, H = projected.shape
        states = projected.new_zeros(T, B, H)
        act = torch.relu_ if nonlinearity == "relu" else torch.tanh_
        weight_t, h = weight.t(), h_0
        for t, n in enumerate(running):
            h = act(torch.addmm(projected[t, :n], h[:n], weight_t))  # (n, H)
            states[t, :n] = h
        ctx.save_for_backward(states, h_0, weight)
        ctx.running, ctx.nonlinearity = running, nonlinearity
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states: Tensor):
        states, h_0, weight = ctx.saved_tensors
        running = ctx.running
        T, B, H = states.shape
        grad_pre = torch.zeros_like(states)  # d loss / d (u_t + h_{t-1} W^T), (T, B, H)
        carry = grad_states.new_zeros(0, H)  # d loss / d h_t from step t + 1, (running[t + 1], H)
        for t in range(T - 1, -1, -1):
            n, h_t = running[t], states[t, : running[t]]
            grad = grad_states[t, :n].clone()
            grad[: carry.shape[0]] += carry
            if ctx.nonlinearity == "relu":  # the op autograd runs for relu (a bool mask product is 5x slower)
                grad = torch.ops.aten.threshold_backward(grad, h_t, 0)
            else:
                grad *= 1 - h_t.square()
            grad_pre[t, :n] = grad
            carry = grad @ weight  # (n, H)
        grad_h_0 = torch.zeros_like(h_0)
        grad_h_0[: carry.shape[0]] = carry
        # dW = sum_t g_t^T h_{t-1} over the real steps only, in one product
        real = torch.cat([torch.arange(n, device=states.device) + t * B for t, n in enumerate(running)])
        previous = torch.cat([h_0.unsqueeze(0), states[:-1]]).reshape(T * B, H)[real]  # (N, H)
        grad_weight = grad_pre.reshape(T * B, H)[real].t() @ previous  # (H, H)
        return grad_pre, grad_h_0, grad_weight, None, None
