"""What every pyroseq model provides, so that training, evaluation and decoding treat all alike.

Every model is a :class:`~pyro.nn.PyroModule` whose ``forward(ids, mask)`` is a Pyro model over a padded
batch of sequences:

* ``ids``: ``(B, T)`` long symbol ids, or ``None`` to draw the symbols;
* ``mask``: ``(B, T)`` bool, True on real steps;
* it declares ``pyro.plate("seqs", B, dim=-1)`` and inside it, for ``t = 1..T``, an observed site
  ``w_{t}`` (Categorical over the whole vocabulary, masked by ``mask[:, t-1]``) and, for latent-state
  models, a latent site ``h_{t}`` before it.

Emission logits give ``-inf`` to PAD and BOS (see :func:`mask_special_logits`): the models put their
mass on real symbols and EOS only.

Two families refine this:

* :class:`AutoregressiveModel` (teacher-forced RNNs): ``log q(w)`` is exact; decoding feeds symbols back.
* :class:`StateSpaceModel` (the DSSM): the state never sees the symbols; ``log q(w)`` is estimated.
"""

from __future__ import annotations

import torch
from pyro.nn import PyroModule
from torch import Tensor

from pyroseq.data.vocab import Vocabulary

__all__ = ["SequenceModel", "AutoregressiveModel", "StateSpaceModel", "mask_special_logits"]


def mask_special_logits(logits: Tensor) -> Tensor:
    """Set the logits of PAD and BOS to ``-inf``: no model emits them."""
    special = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    special[Vocabulary.pad_id] = True
    special[Vocabulary.bos_id] = True
    return logits.masked_fill(special, float("-inf"))


class SequenceModel(PyroModule):
    """Base class: a Pyro model ``forward(ids, mask)`` over padded symbol sequences."""

    autoregressive: bool = False

    def __init__(self, *, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids: Tensor | None, mask: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class AutoregressiveModel(SequenceModel):
    """A model with ``q(w) = prod_t q(w_t | w_{<t})``, scored exactly and decoded step by step.

    The decoder state is one flat tensor ``(B, S)`` so that decoders and prefix-tree scoring can index,
    repeat and reorder it along dim 0 without knowing its structure.
    """

    autoregressive = True

    def initial_state(self, batch_size: int) -> Tensor:
        """The state before the first symbol, ``(B, S)``."""
        raise NotImplementedError

    def step(self, state: Tensor, prev_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Feed the previous symbols ``(B,)`` (BOS at t=1); returns ``(logits (B, V), new state (B, S))``.

        The logits are those of ``q(w_t | w_{<t})`` with PAD and BOS masked.
        """
        raise NotImplementedError

    def log_prob(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Exact ``log q(w)`` per sequence, ``(B,)``, teacher-forced."""
        B, T = ids.shape
        state = self.initial_state(B)
        prev = torch.full((B,), Vocabulary.bos_id, dtype=torch.long, device=ids.device)
        total = torch.zeros(B, device=ids.device)
        for t in range(T):
            logits, state = self.step(state, prev)
            lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, t : t + 1]).squeeze(-1)
            total = total + lp.masked_fill(~mask[:, t], 0.0)
            prev = ids[:, t]
        return total


class StateSpaceModel(SequenceModel):
    """A model whose state moves without seeing the symbols: ``h_t ~ p(h_t | h_{t-1})``, ``w_t ~ p(w_t | h_t)``."""

    state_dim: int

    def sample_states(self, num: int, length: int) -> Tensor:
        """Draw ``num`` state trajectories ``h_1..h_T`` from the prior, ``(num, T, D)`` (no Pyro sites)."""
        raise NotImplementedError

    def emission_logits(self, h: Tensor) -> Tensor:
        """Logits of ``p(w_t | h_t)``, ``(..., V)``, PAD and BOS masked."""
        raise NotImplementedError
