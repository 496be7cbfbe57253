"""What every pyroseq model provides, so that training, evaluation and decoding treat all alike.

Every model is a :class:`~pyro.nn.PyroModule` whose ``forward(ids, mask)`` is a Pyro model over a padded
batch of sequences:

* ``ids``: ``(B, T)`` long symbol ids, or ``None`` to draw the symbols;
* ``mask``: ``(B, T)`` bool, True on real steps;
* it declares ``pyro.plate("seqs", B, dim=-1)`` and inside it, for ``t = 1..T``, an observed site
  ``w_{t}`` (Categorical over the whole vocabulary, masked by ``mask[:, t-1]``) and, for latent-state
  models, one latent site ``h`` before them: the whole state trajectory, event shape ``(T, D)``.

Emission logits give ``-inf`` to PAD and BOS (see :func:`mask_special_logits`): the models put their
mass on real symbols and EOS only.

Two families refine this:

* :class:`AutoregressiveModel` (teacher-forced RNNs): ``log q(w)`` is exact; decoding feeds symbols back.
* :class:`StateSpaceModel` (the DSSM): the state never sees the symbols; ``log q(w)`` is estimated.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions import TorchDistribution, TransformedDistribution
from torch import Tensor
from torch.distributions.transforms import ComposeTransform

from pyroseq.data.batch import Batch
from pyroseq.data.vocab import Vocabulary
from pyroseq.emissions.categorical import mask_special_logits, symbol_log_prob
from pyroseq.errors import ConfigError
from pyroseq.flows.trajectory import shift_states
from pyroseq.module import PyroseqModule

__all__ = ["SequenceModel", "AutoregressiveModel", "StateSpaceModel", "mask_special_logits"]


class SequenceModel(PyroseqModule):
    """Base class: a Pyro model ``forward(ids, mask)`` over padded symbol sequences.

    Each instance has its own Pyro name (``name=``, else ``model``, ``model_2``, ...; see
    :mod:`pyroseq.module`), and its inputs are checked before ``forward`` runs.
    """

    autoregressive: bool = False
    emission: str = "categorical"  # the emission family (see pyroseq.emissions): what one step observes

    def __init__(self, *, vocab_size: int | None, name: str | None = None) -> None:
        super().__init__(role="model", vocab_size=vocab_size, name=name)

    @property
    def emits_symbols(self) -> bool:
        """Whether each step emits a symbol (``categorical``) rather than a vector (a frame)."""
        return self.emission == "categorical"

    def require_symbols(self, doing: str) -> None:
        """Raise :class:`~pyroseq.errors.ConfigError` naming ``doing`` unless the model emits symbols: the
        decoders, completion and the word estimators walk symbols and have no meaning for frames."""
        if not self.emits_symbols:
            raise ConfigError(
                f"{doing} works on sequences of symbols, but this {type(self).__name__} emits "
                f"{self.emission} frames: use pyroseq.evaluate.frame_nll and pyroseq.predictive for frames"
            )

    def forward(self, ids: Tensor | None, mask: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # Training hooks: the trainer calls these; the defaults suit plain SVI.

    def train_hook(self, step: int, batch: Batch) -> dict[str, float]:
        """Called by the trainer before each SVI step (scheduled sampling, a discriminator update, ...).

        A model whose training state must advance under plain ``SVI`` too also calls it itself (the
        RNN baselines count their own steps: see :mod:`pyroseq.models.rnn`). Returns figures to log
        (e.g. ``{"teacher_prob": 0.9}``).
        """
        return {}

    def extra_state_dict(self) -> dict[str, Any]:
        """State beyond ``state_dict()`` that a checkpoint must keep (an auxiliary optimiser), or ``{}``."""
        return {}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state_dict`."""


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

    def teacher_forced_logits(self, ids: Tensor) -> Tensor:
        """Logits of ``q(w_t | w_{<t})`` at every step, ``(B, T, V)``, fed the true symbols (BOS first)."""
        B, T = ids.shape
        state = self.initial_state(B)
        prev = torch.full((B,), Vocabulary.bos_id, dtype=torch.long, device=ids.device)
        logits = []
        for t in range(T):
            step_logits, state = self.step(state, prev)  # (B, V)
            logits.append(step_logits)
            prev = ids[:, t]
        return torch.stack(logits, dim=1)  # (B, T, V)

    def log_prob(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Exact ``log q(w)`` per sequence, ``(B,)``, teacher-forced."""
        log_probs = torch.log_softmax(self.teacher_forced_logits(ids), dim=-1)  # (B, T, V)
        return log_probs.gather(-1, ids[..., None]).squeeze(-1).masked_fill(~mask, 0.0).sum(-1)  # (B,)


class StateSpaceModel(SequenceModel):
    """A model whose state moves without seeing the symbols.

    ``h_t ~ p(h_t | h_{t-1})`` and ``w_t ~ p(w_t | h_t)``.
    """

    state_dim: int

    def latent_shapes(self, mask: Tensor) -> dict[str, tuple[int, ...]]:
        """The one latent site: ``h``, the whole state trajectory, ``(B, T, D)``."""
        return {"h": (*mask.shape, self.state_dim)}

    def initial_state(self, batch_shape: torch.Size | tuple[int, ...]) -> Tensor:
        """``h_0`` expanded to ``batch_shape + (D,)``."""
        raise NotImplementedError

    def transition(self, h_prev: Tensor) -> TorchDistribution:
        """``p(h_t | h_{t-1})``: event shape ``(D,)``, batch shape ``h_prev.shape[:-1]``."""
        raise NotImplementedError

    def noise(self, states: Tensor) -> Tensor:
        """The white noise behind a state trajectory, ``xi_t = f^{-1}(h_t; h_{t-1})``, ``(..., T, D)``.

        The transition ``p(h_t | h_{t-1})`` is the push-forward of ``xi_t ~ N(0, I_D)`` through
        ``f(. ; h_{t-1})``; its transforms are inverted on all T steps at once, from ``h_0`` =
        :meth:`initial_state`, as the model does when it scores a trajectory.

        Args:
            states: ``h_1..h_T``, ``(..., T, D)``.

        Raises:
            ConfigError: the transition is not a push-forward of noise (a ``TransformedDistribution``).
        """
        h_prev = shift_states(self.initial_state(states.shape[:-2]), states)  # (..., T, D)
        law = self.transition(h_prev)
        if not isinstance(law, TransformedDistribution):
            raise ConfigError(
                f"{type(self).__name__}.transition gives a {type(law).__name__}, not the push-forward of "
                "noise through a flow (a TransformedDistribution): its states have no noise to recover"
            )
        return ComposeTransform(law.transforms).inv(states)  # (..., T, D)

    @torch.no_grad()
    def sample_states(self, num: int, length: int) -> Tensor:
        """Draw ``num`` state trajectories ``h_1..h_T`` from the prior, ``(num, T, D)`` (no Pyro sites)."""
        h = self.initial_state((num,))
        states = []
        for _ in range(length):
            h = self.transition(h).sample()
            states.append(h)
        return torch.stack(states, dim=-2)  # (num, T, D)

    def emission_logits(self, h: Tensor) -> Tensor:
        """Logits of ``p(w_t | h_t)``, ``(..., V)``, PAD and BOS masked."""
        raise NotImplementedError

    def emission_log_prob(self, h: Tensor, obs: Tensor) -> Tensor:
        """``log p(x_t | h_t)`` at states ``h (..., D)`` of one step's observations ``obs``: symbol ids
        ``(...)`` or frames ``(..., F)``, broadcast against ``h.shape[:-1]``.

        This default reads :meth:`emission_logits` (a categorical emission); a model with another emission
        family overrides it (the DSSM asks its emission).
        """
        return symbol_log_prob(self.emission_logits(h), obs)
