"""The future-conditioned guide of the DSSM (Schmidt & Hofmann, 2018), with and without a flow.

The data reaches the states only through the guide, as information about the **future**; the past
lives in the previous state:

    b_t  = backward RNN summary of w_{t:T}                       (the future, w_t included; a GRU,
           or the plain ReLU RNN of Pyro's Deep Markov Model)
           (w_t a symbol, embedded; or a frame, mapped by a linear input layer)
    xi_t ~ N(mu(h_{t-1}, b_t), diag sigma^2(h_{t-1}, b_t))
    h_t  = f_Q(xi_t; h_{t-1}, b_t)                               its own conditional flow, or h_t = xi_t

so that q(h_t | h_{t-1}, w_{t:T}) = N(f_Q^{-1}(h_t); mu, sigma^2) |det d f_Q^{-1} / d h_t|. The guide
only scores its own samples, so ``f_Q`` needs no inverse.

References:
    F. Schmidt and T. Hofmann. Deep State Space Models for Unconditional Word Generation.
    NeurIPS 2018. arXiv:1806.04550.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import Tensor, nn

from pyroseq.checks import check_positive_sizes, check_vocab_size
from pyroseq.data.vocab import Vocabulary
from pyroseq.emissions import check_vectors
from pyroseq.errors import ConfigError, DataError
from pyroseq.flows import resolve_flow
from pyroseq.flows.trajectory import StateTrajectory, standard_normal_log_prob
from pyroseq.guides.elman import LengthAwareRNN
from pyroseq.module import PyroseqModule
from pyroseq.plates import plate_batch_shape

__all__ = ["FutureGuide", "GaussianGuide", "RNN_CELLS"]

RNN_CELLS = {
    "gru": lambda inputs, hidden: nn.GRU(inputs, hidden, batch_first=True),
    "relu": lambda inputs, hidden: LengthAwareRNN(inputs, hidden, nonlinearity="relu"),
}
"""The guide's backward RNN by name: ``(input size, hidden size) -> module``."""


class FutureGuide(PyroseqModule):
    """Guide ``q(h_{1:T} | w_{1:T}) = prod_t q(h_t | h_{t-1}, w_{t:T})`` for :class:`~pyroseq.models.DSSM`.

    ``forward(ids, mask)`` takes the model's arguments and declares the model's latent site ``"h"`` (the
    whole trajectory, ``(..., B, T, D)``) inside ``pyro.plate("seqs", B, dim=-1)``, a
    :class:`~pyroseq.flows.trajectory.StateTrajectory` drawn step by step. At padded steps it draws
    ``h_t ~ N(0, I)``, the model's own law there, so those steps cost nothing. The combiner follows Pyro's
    Deep Markov Model: ``c_t = (tanh(A h_{t-1}) + b_t) / 2``, ``mu = M c_t``, ``sigma = softplus(S c_t)``.

    It reads what the model emits: symbol ids ``(B, T)`` through an embedding (``vocab_size``), or frames
    ``(B, T, F)`` through a linear input layer (``obs_dim``); give exactly one of the two.

    Args:
        vocab_size: V, the number of symbols including PAD, BOS and EOS (a model of symbols).
        state_dim: D, the dimension of the state (must equal the model's).
        flow: the guide's flow f_Q, a name of :func:`pyroseq.flows.make_flow` or a
            :class:`~pyro.distributions.conditional.ConditionalTransformModule` mapping ``(D,)`` to ``(D,)``
            with a ``(D + rnn_hidden,)`` context ``[h_{t-1}, b_t]``; ``None`` or ``"none"`` for a Gaussian.
        flow_hidden: hidden width of a named flow's networks.
        embed_dim: dimension of the symbol embedding (or of the frames' linear map) fed to the backward RNN.
        rnn_hidden: H, the backward RNN's hidden size (and the combiner's width).
        obs_dim: F, the length of each observed frame (a model of vectors).
        rnn_cell: the backward RNN: ``"gru"``, or ``"relu"``, the plain ReLU RNN of Pyro's Deep Markov Model
            example (a third of a GRU's recurrent arithmetic at the same width).
        name: the prefix of its parameters in Pyro's param store; ``None``: ``guide``, ``guide_2``, ... in
            order of construction (see :mod:`pyroseq.module`). Pass it where parameters are saved and loaded.

    Example:
        The guide of a DSSM of 88-key piano rolls:

        >>> guide = FutureGuide(obs_dim=88, state_dim=8)
        >>> frames, mask = torch.zeros(2, 5, 88), torch.ones(2, 5, dtype=torch.bool)
        >>> states = pyro.poutine.trace(guide).get_trace(frames, mask).nodes["h"]
        >>> states["value"].shape
        torch.Size([2, 5, 8])
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        state_dim: int = 16,
        flow: str | ConditionalTransformModule | None = "diagonal",
        flow_hidden: int = 64,
        embed_dim: int = 16,
        rnn_hidden: int = 64,
        obs_dim: int | None = None,
        rnn_cell: str = "gru",
        name: str | None = None,
    ) -> None:
        if rnn_cell not in RNN_CELLS:
            raise ConfigError(f"unknown rnn_cell {rnn_cell!r}: use one of {', '.join(RNN_CELLS)}")
        if (vocab_size is None) == (obs_dim is None):
            raise ConfigError(
                "the future-conditioned guide reads symbols (vocab_size) or frames (obs_dim): give exactly "
                f"one, got vocab_size={vocab_size!r}, obs_dim={obs_dim!r}"
            )
        if vocab_size is not None:
            check_vocab_size(vocab_size)
        check_positive_sizes(
            state_dim=state_dim,
            flow_hidden=flow_hidden,
            embed_dim=embed_dim,
            rnn_hidden=rnn_hidden,
            obs_dim=obs_dim,
        )
        super().__init__(role="guide", vocab_size=vocab_size, name=name)
        self.state_dim = state_dim
        self.rnn_hidden = rnn_hidden
        self.obs_dim = obs_dim
        self.h_0 = nn.Parameter(torch.zeros(state_dim))
        # the input layer: an embedding of symbols, or a linear map of frames
        if obs_dim is None:
            self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=Vocabulary.pad_id)
        else:
            self.embed = nn.Linear(obs_dim, embed_dim)
        self.rnn_cell = rnn_cell
        self.future_rnn = RNN_CELLS[rnn_cell](embed_dim, rnn_hidden)
        self.state_to_hidden = nn.Linear(state_dim, rnn_hidden)
        self.hidden_to_loc = nn.Linear(rnn_hidden, state_dim)
        self.hidden_to_scale = nn.Linear(rnn_hidden, state_dim)
        if flow is None or flow == "none":
            self.posterior_flow = None
        else:
            self.posterior_flow = resolve_flow(
                flow,
                input_dim=state_dim,
                context_dim=state_dim + rnn_hidden,
                flow_hidden=flow_hidden,
                need_inverse=False,
                role="guide flow",
            )

    def checked_inputs(self, ids: Tensor | None, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        """The symbol ids (``vocab_size``) or frames (``obs_dim``) and the mask, checked."""
        if self.obs_dim is None:
            if isinstance(ids, Tensor) and ids.dim() == 3:
                raise DataError(
                    f"{type(self).__name__}: got frames of shape {tuple(ids.shape)}, but this guide reads "
                    "symbol ids (B, T); build it with obs_dim for frames"
                )
            return super().checked_inputs(ids, mask)
        frames, mask = check_vectors(ids, mask, obs_dim=self.obs_dim, who=type(self).__name__)
        # frames in the guide's own precision (numpy gives float64, the input layer's weights are float32)
        return (None if frames is None else frames.to(self.embed.weight.dtype)), mask

    def future_summary(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``b_t``, the backward RNN's summary of ``w_{t:L}`` for each sequence of length L, ``(B, T, H)``.

        Each sequence is reversed within its length (padding stays at the end), run through the GRU and
        put back in order, so ``b_t`` never sees padding. Values at padded steps are meaningless (masked).

        Args:
            ids: ``(B, T)`` symbol ids, or ``(B, T, F)`` frames.
            mask: ``(B, T)``.
        """
        B, T = mask.shape
        lengths = mask.sum(-1, keepdim=True)  # (B, 1)
        pos = torch.arange(T, device=mask.device).expand(B, T)  # (B, T)
        reverse = torch.where(pos < lengths, lengths - 1 - pos, pos)  # (B, T), an involution
        index = reverse if ids.dim() == 2 else reverse.unsqueeze(-1).expand(ids.shape)  # (B, T[, F])
        reversed_inputs = self.embed(ids.gather(1, index))  # (B, T, E)
        if isinstance(self.future_rnn, LengthAwareRNN):  # steps each sequence over its own length
            summary, _ = self.future_rnn(reversed_inputs, lengths=lengths.squeeze(-1))  # (B, T, H)
        else:
            summary, _ = self.future_rnn(reversed_inputs)  # (B, T, H), reversed time
        return summary.gather(1, reverse.unsqueeze(-1).expand(B, T, self.rnn_hidden))  # (B, T, H)

    def forward(self, ids: Tensor | None, mask: Tensor) -> None:
        """Draw ``h_1..h_T`` given the observations.

        Args:
            ids: ``(B, T)`` long symbol ids or ``(B, T, F)`` frames; this guide needs them (it conditions on
                the future).
            mask: ``(B, T)`` bool, True on real steps; each row a prefix of Trues (right padding).
        """
        if ids is None:
            raise DataError("the future-conditioned guide needs the observations, got ids=None")
        B, T = mask.shape
        future = self.future_summary(ids, mask)  # (B, T, H)
        # Each attribute access of a plain nn.Module is a pyro.module statement: fetch them once per run.
        flow, state_to_hidden = self.posterior_flow, self.state_to_hidden
        hidden_to_loc, hidden_to_scale = self.hidden_to_loc, self.hidden_to_scale
        # loc and scale in one matmul per step
        weight = torch.cat([hidden_to_loc.weight, hidden_to_scale.weight])  # (2 D, H)
        bias = torch.cat([hidden_to_loc.bias, hidden_to_scale.bias])  # (2 D,)

        with pyro.plate("seqs", B, dim=-1):
            h_0 = self.h_0.expand(*plate_batch_shape(), self.state_dim)  # (B, D), or (K, B, D) with particles
            b_all = future.expand(*h_0.shape[:-1], T, self.rnn_hidden)  # (..., B, T, H)
            # One view per step: indexing b_all at each step would make backward fill a zero tensor of
            # b_all's size per step (T^2 B H in all; a third of a step of Pyro's DMM sizes).
            b_each = b_all.unbind(-2)  # T x (..., B, H)

            def step_law(h_prev: Tensor, steps: int | slice | Tensor) -> _FutureStep:
                """``q(h_t | h_{t-1}, w_{t:T})``; ``steps`` an index (``h_prev (..., B, D)``, or the batch's
                first rows: the trajectory then steps the running ones only), all steps, or the flat
                positions ``b * T + t`` of the real steps (``h_prev (..., N, D)``)."""
                if isinstance(steps, int):
                    b = b_each[steps][..., : h_prev.shape[-2], :]  # (..., B, H), or its first rows
                elif isinstance(steps, slice):
                    b = b_all[..., steps, :]  # (..., B, T, H)
                else:
                    b = future.flatten(0, 1)[steps].expand(*h_prev.shape[:-1], self.rnn_hidden)  # (..., N, H)
                loc, scale = _combine(h_prev, b, state_to_hidden, weight, bias)  # (..., B, [T,] D) each
                # A fresh .condition() per step: each sample is scored from its own transform's cache.
                transform = None if flow is None else flow.condition(torch.cat([h_prev, b], dim=-1))
                return _FutureStep(loc, scale, transform)

            pyro.sample(
                "h", StateTrajectory(step_law, h_0, mask, running_rows=True, real_steps=True)
            )  # (..., B, T, D)


def _combine(h_prev: Tensor, b: Tensor, state_to_hidden: nn.Linear, weight: Tensor, bias: Tensor):
    """The combiner of Pyro's Deep Markov Model: ``c = (tanh(A h_{t-1}) + b_t) / 2``, then
    ``loc = M c`` and ``scale = softplus(S c) + 1e-4`` (``[M; S]`` is ``weight``)."""
    hidden = 0.5 * (torch.tanh(state_to_hidden(h_prev)) + b)  # (..., H)
    loc, scale = nn.functional.linear(hidden, weight, bias).chunk(2, dim=-1)  # (..., D) each
    return loc, nn.functional.softplus(scale) + 1e-4


class _FutureStep(dist.TorchDistribution):
    """One step of the guide, ``h_t = f_Q(loc + scale * eps)``, ``eps ~ N(0, I)``: event shape ``(D,)``.

    The law of :class:`~pyro.distributions.TransformedDistribution` of a diagonal Normal, without its
    per-step bookkeeping: :class:`~pyroseq.flows.trajectory.StateTrajectory` draws it from its own noise
    with :meth:`reparameterize`.
    """

    arg_constraints: dict = {}
    support = dist.constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, transform: dist.transforms.Transform | None) -> None:
        self.loc, self.scale, self.transform = loc, scale, transform
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _log_det(self, xi: Tensor, h: Tensor) -> Tensor:
        """``log |det d h / d eps|``, ``(...,)``."""
        log_det = self.scale.log().sum(-1)
        if self.transform is not None:
            flow_log_det = self.transform.log_abs_det_jacobian(xi, h)
            log_det = log_det + (
                flow_log_det.sum(-1) if self.transform.codomain.event_dim == 0 else flow_log_det
            )
        return log_det

    def reparameterize(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """``h = f_Q(loc + scale * eps)`` and ``log |det d h / d eps|``; ``eps (..., D)`` standard normal."""
        xi = self.loc + self.scale * eps  # (..., D)
        h = xi if self.transform is None else self.transform(xi)
        return h, self._log_det(xi, h)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        return self.reparameterize(torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device))[0]

    def log_prob(self, value: Tensor) -> Tensor:
        xi = value if self.transform is None else self.transform.inv(value)
        return standard_normal_log_prob((xi - self.loc) / self.scale) - self._log_det(xi, value)


class GaussianGuide(FutureGuide):
    """The future-conditioned guide without a flow: ``q(h_t | h_{t-1}, w_{t:T})`` is a diagonal Normal.

    Args:
        vocab_size: V, the number of symbols including PAD, BOS and EOS (a model of symbols).
        state_dim: D, the dimension of the state (must equal the model's).
        embed_dim: dimension of the symbol embedding (or of the frames' linear map) fed to the backward RNN.
        rnn_hidden: H, the backward RNN's hidden size (and the combiner's width).
        obs_dim: F, the length of each observed frame (a model of vectors).
        rnn_cell: the backward RNN, as for :class:`FutureGuide`.
        name: as for :class:`FutureGuide`.
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        state_dim: int = 16,
        embed_dim: int = 16,
        rnn_hidden: int = 64,
        obs_dim: int | None = None,
        rnn_cell: str = "gru",
        name: str | None = None,
    ) -> None:
        super().__init__(
            vocab_size=vocab_size,
            state_dim=state_dim,
            flow=None,
            embed_dim=embed_dim,
            rnn_hidden=rnn_hidden,
            obs_dim=obs_dim,
            rnn_cell=rnn_cell,
            name=name,
        )
