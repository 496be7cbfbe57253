"""Professor forcing (Lamb et al., 2016): an RNN language model trained to behave alike when fed the data
and when fed its own samples.

A discriminator ``D(b) = P(b is teacher-forced)`` reads a *behaviour* sequence ``b_t = [h_t, phi_t]``: the
generator's top-layer hidden state and its output distribution's parameters at each step, ``softmax(g(h_t))``
over symbols, or for frames the emission's own (:meth:`~pyroseq.emissions.Emission.features`: each key's
probability ``sigmoid(g(h_t))`` for a Bernoulli frame, the location and scale for a Normal one). It is
trained on its own, with Adam, to tell the teacher-forced run on a batch (label 1), read up to the data's
lengths, from a free-running run fed its own draws (label 0). A free run of symbols is read up to its own
first EOS (``min(first EOS + 1, T)``): it is never shown steps after its word has ended, which no
teacher-forced run has. Frames have no EOS: a free run of frames lasts as long as the data, each sequence
its own length. The generator's Pyro model adds to the exact log-likelihood the factor

    log f = -weight * ( -log D(b_free) [ - log(1 - D(b_teacher)) ] )

so that maximising the ELBO also makes free-running behaviour look teacher-forced (and, optionally, the
teacher-forced behaviour look free-running). As in the paper, the adversarial term is only used while the
discriminator's latest accuracy lies in a window (default [0.75, 0.99]): a discriminator that is guessing
or one that is saturated gives no useful gradient.

References:
    A. Lamb, A. Goyal, Y. Zhang, S. Zhang, A. Courville, Y. Bengio. Professor Forcing: A New Algorithm for
    Training Recurrent Networks. NeurIPS 2016. arXiv:1610.09038.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from pyroseq.checks import check_positive_sizes
from pyroseq.data.batch import SequenceBatch
from pyroseq.errors import CheckpointError, ConfigError, first_line
from pyroseq.models.rnn import RNNLM

__all__ = ["Discriminator", "ProfessorForcing"]


class Discriminator(nn.Module):
    """``D(b)``: the logit of the probability that a behaviour sequence comes from a teacher-forced run.

    A bidirectional GRU reads ``b_1..b_T`` (each sequence up to its own length); an MLP maps its two final
    states to one logit.

    Args:
        behaviour_dim: F, the size of ``b_t``.
        hidden_dim: the GRU's hidden size per direction and the MLP's width.
    """

    def __init__(self, *, behaviour_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(behaviour_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, behaviour: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(B,)`` for behaviours ``(B, T, F)`` whose first ``lengths`` ``(B,)`` steps are real."""
        packed = pack_padded_sequence(behaviour, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.rnn(packed)  # (2, B, hidden): the forward and the backward direction
        return self.mlp(torch.cat([last[0], last[1]], dim=-1)).squeeze(-1)


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Compute with ``module`` as a fixed function: no gradient reaches its parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class ProfessorForcing(RNNLM):
    """An :class:`~pyroseq.models.rnn.RNNLM` whose training adds the professor-forcing adversarial factor.

    ``vocab_size``, ``cell``, ``state_dim``, ``embed_dim``, ``num_layers``, ``learned_initial_state``,
    ``emission`` and ``obs_dim`` are as for :class:`~pyroseq.models.rnn.RNNLM` (there is no scheduled
    sampling): symbols, or frames (``emission="bernoulli", obs_dim=88`` for a piano roll).

    Args:
        adversarial_weight: the weight of the adversarial term against the log-likelihood (>= 0).
        disc_hidden: the discriminator's hidden size.
        disc_lr: the learning rate of the discriminator's own Adam optimiser.
        accuracy_window: ``[low, high]``: the adversarial term reaches the generator only while the
            discriminator's latest accuracy lies in this closed interval.
        free_running_term_only: if False, also push the teacher-forced behaviour toward free-running.

        name: as for :class:`~pyroseq.models.rnn.RNNLM`.

    The discriminator (:attr:`discriminator`, a plain ``nn.Module``) is the model's own business, not a
    Pyro param: it is trained by :meth:`train_hook` with its own Adam, :attr:`discriminator_optimizer`,
    once per training step, on that step's batch, before the generator's update. Under plain ``SVI`` (any
    optimiser; see :mod:`pyroseq.models.rnn`) the model calls :meth:`train_hook` itself at the first
    training pass after each optimisation step; :class:`~pyroseq.infer.Trainer` calls it before each step.
    ``SVI`` and the Trainer train the generator only (:meth:`optimised_parameters`); the discriminator's
    weights are in ``state_dict()``, its optimiser's state in :meth:`extra_state_dict`.

    Attributes:
        discriminator_optimizer: the discriminator's ``torch.optim.Adam`` (learning rate ``disc_lr``).
        disc_accuracy: the discriminator's accuracy at its latest update (``None`` before the first).

    Example:
        Piano-roll frames: the discriminator reads each step's hidden state and 88 key probabilities.

        >>> from pyroseq.data.polyphonic import pad_frames
        >>> model = ProfessorForcing(emission="bernoulli", obs_dim=88, state_dim=8, embed_dim=8)
        >>> rolls = pad_frames([torch.zeros(5, 88), torch.ones(3, 88)])
        >>> figures = model.train_hook(0, rolls)  # one step of the discriminator
        >>> sorted(figures), model.discriminator.rnn.input_size
        (['disc_accuracy', 'disc_loss'], 96)
    """

    supports_jit = False  # the adversarial factor depends on the discriminator's accuracy, a Python value

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        cell: str = "gru",
        state_dim: int = 16,
        embed_dim: int = 16,
        num_layers: int = 1,
        learned_initial_state: bool = True,
        adversarial_weight: float = 1.0,
        disc_hidden: int = 32,
        disc_lr: float = 1e-3,
        accuracy_window: Sequence[float] = (0.75, 0.99),
        free_running_term_only: bool = True,
        emission: str = "categorical",
        obs_dim: int | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(adversarial_weight, bool) or not isinstance(adversarial_weight, int | float):
            raise ConfigError(f"adversarial_weight must be a number, got {adversarial_weight!r}")
        if not (math.isfinite(adversarial_weight) and adversarial_weight >= 0):
            raise ConfigError(f"adversarial_weight must be finite and non-negative, got {adversarial_weight}")
        check_positive_sizes(disc_hidden=disc_hidden)
        if isinstance(disc_lr, bool) or not isinstance(disc_lr, int | float) or not disc_lr > 0:
            raise ConfigError(f"disc_lr must be a positive number, got {disc_lr!r}")
        try:
            low, high = (float(a) for a in accuracy_window)
        except (TypeError, ValueError):
            raise ConfigError(
                f"accuracy_window must be a pair [low, high], got {accuracy_window!r}"
            ) from None
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"accuracy_window must satisfy 0 <= low <= high <= 1, got {accuracy_window!r}")
        if not isinstance(free_running_term_only, bool):
            raise ConfigError(f"free_running_term_only must be true or false, got {free_running_term_only!r}")
        super().__init__(
            vocab_size=vocab_size,
            cell=cell,
            state_dim=state_dim,
            embed_dim=embed_dim,
            num_layers=num_layers,
            learned_initial_state=learned_initial_state,
            emission=emission,
            obs_dim=obs_dim,
            name=name,
        )
        self.adversarial_weight = float(adversarial_weight)
        self.accuracy_window = (low, high)
        self.free_running_term_only = free_running_term_only
        # Into _modules directly: add_module refuses a name that the property below already answers.
        self._modules["discriminator"] = Discriminator(
            behaviour_dim=state_dim + self._feature_dim, hidden_dim=disc_hidden
        )
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=disc_lr)
        self.disc_accuracy: float | None = None

    @property
    def discriminator(self) -> Discriminator:
        """``D``, a submodule read from ``_modules``: a ``PyroModule`` reads a plain submodule attribute
        through ``pyro.module``, which would hand it to the ``SVI`` optimiser."""
        return self._modules["discriminator"]

    def _behaviour(self, outputs: Tensor, params: Tensor) -> Tensor:
        """``b_t = [h_t, phi_t]`` ``(B, T, H + P')``: the top-layer states and the emission's parameters."""
        return torch.cat([outputs, self._features(params)], dim=-1)

    def _free_behaviour(self, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The behaviour of a free run over ``mask``'s ``T`` steps ``(B, T, H + P')`` and the lengths ``(B,)``
        the discriminator reads of it (see :meth:`~pyroseq.models.rnn.RNNLM._free_running`)."""
        outputs, params, lengths = self._free_running(mask)
        return self._behaviour(outputs, params), lengths

    def adversarial_active(self) -> bool:
        """Whether the latest discriminator accuracy lies in the window, so the generator gets the term."""
        low, high = self.accuracy_window
        return self.disc_accuracy is not None and low <= self.disc_accuracy <= high

    def _training_mode_only(self) -> str | None:
        """The adversarial term: training mode only (see :meth:`_model`)."""
        return "adversarial term (and the discriminator's updates)"

    def _model(self, ids: Tensor | None, mask: Tensor) -> None:
        """The Pyro model of :class:`~pyroseq.models.rnn.RNNLM`, plus in training mode the factor
        ``professor`` ``(B,)`` while :meth:`adversarial_active`."""
        if ids is None or not self.training or not self.adversarial_active():
            return super()._model(ids, mask)
        lengths = mask.sum(-1)
        with pyro.plate("seqs", mask.shape[0], dim=-1):
            outputs, params = self._teacher_forced(ids)
            self._observe(params, ids, mask)
            free, free_lengths = self._free_behaviour(mask)
            with _frozen(self.discriminator):
                # -log D(b_free): the discriminator should take free-running behaviour for teacher-forced
                loss = F.softplus(-self.discriminator(free, free_lengths))
                if not self.free_running_term_only:
                    # -log(1 - D(b_teacher))
                    loss = loss + F.softplus(self.discriminator(self._behaviour(outputs, params), lengths))
            pyro.factor("professor", -self.adversarial_weight * loss)

    def train_hook(self, step: int, batch: SequenceBatch) -> dict[str, float]:
        """One Adam step of the discriminator: the batch's teacher-forced (1) vs free-running (0) behaviour.

        Records the discriminator's accuracy on these behaviours (before its step) in ``disc_accuracy``.
        :class:`~pyroseq.infer.Trainer` calls it before each step; under plain ``SVI`` the model calls it
        itself (see :mod:`pyroseq.models.rnn`).
        """
        super().train_hook(step, batch)
        B = len(batch)
        with torch.no_grad():
            teacher = self._behaviour(*self._teacher_forced(batch.observations))
            free, free_lengths = self._free_behaviour(batch.mask)
        logits = self.discriminator(torch.cat([teacher, free]), torch.cat([batch.lengths, free_lengths]))
        labels = torch.cat([torch.ones(B), torch.zeros(B)]).to(logits)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.discriminator_optimizer.zero_grad()
        loss.backward()
        self.discriminator_optimizer.step()
        self.disc_accuracy = ((logits.detach() > 0) == (labels > 0.5)).float().mean().item()
        return {"disc_accuracy": self.disc_accuracy, "disc_loss": loss.item()}

    def optimised_parameters(self) -> list[nn.Parameter]:
        """The generator's parameters: everything but the discriminator."""
        disc = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def extra_state_dict(self) -> dict[str, Any]:
        """The training step, the discriminator optimiser's state and its latest accuracy (its weights are
        in ``state_dict``)."""
        return {
            **super().extra_state_dict(),
            "disc_optimizer": self.discriminator_optimizer.state_dict(),
            "disc_accuracy": self.disc_accuracy,
        }

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state_dict`."""
        try:
            self.discriminator_optimizer.load_state_dict(state["disc_optimizer"])
            self.disc_accuracy = state["disc_accuracy"]
            super().load_extra_state_dict(state)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                "the checkpoint's extra state does not belong to this professor-forcing model "
                f"({first_line(e)}); load it into a model built with the checkpoint's own settings"
            ) from None
