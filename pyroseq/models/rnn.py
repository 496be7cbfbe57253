"""The teacher-forced RNN language model as a deterministic Pyro model, with scheduled sampling.

The model::

    h_0  learned (or zeros)
    h_t  = RNN(h_{t-1}, embed(w_{t-1}))       w_0 = BOS
    w_t  ~ Categorical(softmax(emitter(h_t)))  PAD and BOS masked

has no latent sites: with :func:`pyroseq.guides.empty_guide`, ``SVI`` with ``Trace_ELBO`` minimises the
exact negative log-likelihood. In training mode with a :class:`~pyroseq.models.schedules.TeacherSchedule`
the symbol fed at step ``t`` is the ground truth ``w_{t-1}`` with probability ``eps_i`` and otherwise a
sample from the model's own ``q(w_{t-1} | ...)``, drawn independently per sequence and per step
(scheduled sampling, Bengio et al. 2015).

The training step ``i`` follows plain ``pyro.infer.SVI`` too, under any optimiser: the model counts the
torch optimiser steps taken on its parameters (:attr:`~pyroseq.module.PyroseqModule.optimiser_steps`,
counted by a hook on every ``torch.optim.Optimizer`` step, which covers Pyro's ``Adam``, ``ClippedAdam``,
``SGD``, every ``PyroOptim`` and ``lr_scheduler`` wrapper, and a torch optimiser over
``differentiable_loss``). A training pass (training mode, gradients on, observed ids) that follows such a
step is the next training step, and the model calls its own :meth:`RNNLM.train_hook`; the particles of one
``SVI.step`` share one step, and ``SVI.evaluate_loss`` (no gradients) never counts. An update that is not a
torch optimiser's step is counted with :meth:`~pyroseq.module.PyroseqModule.advance`; a training pass that
finds the parameters changed without either warns, and counts the step. :class:`~pyroseq.infer.Trainer`
calls the hook itself, with its own step count (so a resumed run continues its schedule), and the model then
does not count again.

References:
    S. Bengio, O. Vinyals, N. Jaitly, N. Shazeer. Scheduled Sampling for Sequence Prediction with
    Recurrent Neural Networks. NeurIPS 2015. arXiv:1506.03099.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from pyroseq.checks import check_positive_sizes
from pyroseq.data.batch import Batch, first_eos
from pyroseq.data.vocab import Vocabulary
from pyroseq.emissions import emission_size, make_emission
from pyroseq.errors import ConfigError
from pyroseq.models.base import AutoregressiveModel, mask_special_logits
from pyroseq.models.init import emitter_output_layer
from pyroseq.models.schedules import TeacherSchedule

__all__ = ["RNNLM"]

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RNNLM(AutoregressiveModel):
    """An RNN language model ``q(w) = prod_t q(w_t | w_{<t})`` trained by teacher forcing.

    Args:
        vocab_size: V, including PAD, BOS and EOS.
        cell: ``"gru"`` or ``"lstm"``.
        state_dim: H, the hidden size of every layer.
        embed_dim: E, the size of the symbol embeddings.
        num_layers: L, stacked recurrent layers.
        learned_initial_state: learn ``h_0`` (and ``c_0``) instead of fixing it at zero.
        schedule: a teacher schedule as a JSON dict (``{"kind": "invsigmoid", "k": 100}``), or ``None`` for
            plain teacher forcing; see :class:`~pyroseq.models.schedules.TeacherSchedule`.
        emission: ``"categorical"`` (symbols, ``vocab_size``), or a family of vectors of
            :data:`pyroseq.emissions.EMISSIONS` (``"bernoulli"`` for piano-roll frames) with ``obs_dim``:
            the model then reads the previous frame through a linear map (a silent frame before the
            first) and emits ``p(x_t | x_{<t})`` with a linear emitter; scheduled sampling feeds its
            own draw of the previous frame.
        obs_dim: F, the length of each frame (an emission of vectors only).
        name: the prefix of its parameters in Pyro's param store; ``None``: ``model``, ``model_2``, ... in
            order of construction (see :mod:`pyroseq.module`). Pass it where parameters are saved and loaded.

    Example:
        A GRU of 88-key piano rolls with Bernoulli outputs, fed the previous frame:

        >>> model = RNNLM(emission="bernoulli", obs_dim=88, state_dim=8, embed_dim=8)
        >>> frames, mask = torch.zeros(2, 5, 88), torch.ones(2, 5, dtype=torch.bool)
        >>> trace = pyro.poutine.trace(model).get_trace(frames, mask)
        >>> first_frame = trace.nodes["w_1"]
        >>> first_frame["fn"].event_shape, trace.log_prob_sum().dtype
        (torch.Size([88]), torch.float32)

    The decoder state is flat, ``(B, S)`` with ``S = L H`` (GRU) or ``2 L H`` (LSTM: ``h`` then ``c``).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> from pyroseq.data import pad_batch
        >>> from pyroseq.guides import empty_guide
        >>> batch = pad_batch([[3, 4, 2], [5, 2]])
        >>> model = RNNLM(vocab_size=8, schedule={"kind": "linear", "c": 0.1}, name="lm")
        >>> svi = SVI(model, empty_guide, pyro.optim.ClippedAdam({"lr": 1e-2}), Trace_ELBO())
        >>> for _ in range(4):
        ...     _ = svi.step(batch.ids, batch.mask)
        >>> model.training_step, round(model.teacher_prob, 2)
        (3, 0.7)
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        cell: str = "gru",
        state_dim: int = 16,
        embed_dim: int = 16,
        num_layers: int = 1,
        learned_initial_state: bool = True,
        schedule: dict[str, Any] | None = None,
        emission: str = "categorical",
        obs_dim: int | None = None,
        name: str | None = None,
    ) -> None:
        obs_dim = emission_size(emission, vocab_size=vocab_size, obs_dim=obs_dim)
        if cell not in _CELLS:
            raise ConfigError(f"unknown RNN cell {cell!r}; choose one of {list(_CELLS)}")
        check_positive_sizes(state_dim=state_dim, embed_dim=embed_dim, num_layers=num_layers)
        if not isinstance(learned_initial_state, bool):
            raise ConfigError(f"learned_initial_state must be true or false, got {learned_initial_state!r}")
        schedule = None if schedule is None else TeacherSchedule.from_dict(schedule)
        super().__init__(vocab_size=vocab_size, name=name)
        self.schedule = schedule
        self.cell = cell
        self.state_dim = state_dim
        self.num_layers = num_layers
        self.emission = emission
        if emission == "categorical":
            self.embed = PyroModule[nn.Embedding](vocab_size, embed_dim)
        else:  # the previous frame, mapped linearly
            self.embed = PyroModule[nn.Linear](obs_dim, embed_dim)
        self.rnn = PyroModule[_CELLS[cell]](embed_dim, state_dim, num_layers=num_layers, batch_first=True)
        if emission == "categorical":
            self.emitter = PyroModule[nn.Linear](state_dim, vocab_size)
        else:
            self.emitter = make_emission(emission, state_dim=state_dim, obs_dim=obs_dim, hidden=None)
        num_states = 2 * num_layers if cell == "lstm" else num_layers
        if learned_initial_state:
            self.initial_hidden = nn.Parameter(torch.zeros(num_states, state_dim))
        else:
            self.register_buffer("initial_hidden", torch.zeros(num_states, state_dim))
        self.teacher_prob = 1.0 if self.schedule is None else self.schedule.teacher_prob(0)
        self.training_step = 0  # the step of the latest training pass
        # optimiser_steps at the latest training pass (None before the first, -1 after a load: the next
        # pass is the next step) and at the latest eval-mode pass with gradients
        self._steps_at_pass: int | None = None
        self._steps_at_eval: int | None = None
        self._emitter_at_pass: Tensor | None = None  # to see updates that no optimiser step counted

    # The flat decoder state and its nn.GRU / nn.LSTM form.

    def _pack(self, hidden: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        stacked = torch.cat(hidden, dim=0) if isinstance(hidden, tuple) else hidden  # (n, B, H)
        return stacked.transpose(0, 1).reshape(stacked.shape[1], -1)  # (B, n H)

    def _unpack(self, state: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        stacked = state.reshape(state.shape[0], -1, self.state_dim).transpose(0, 1).contiguous()  # (n, B, H)
        if self.cell == "lstm":
            return stacked[: self.num_layers], stacked[self.num_layers :]
        return stacked

    def initial_state(self, batch_size: int) -> Tensor:
        h0 = self.initial_hidden  # (n, H)
        return h0.reshape(1, -1).expand(batch_size, -1)  # (B, n H)

    def _emit(self, outputs: Tensor) -> Tensor:
        """The emission's parameters at top-layer states ``(..., H)``: symbol logits with PAD and BOS
        masked ``(..., V)``, or the parameters of a frame's law."""
        if self.emission == "categorical":
            return mask_special_logits(self.emitter(outputs))
        return self.emitter(outputs)

    def _law(self, params: Tensor) -> dist.TorchDistribution:
        """``q(w_t | w_{<t})`` given :meth:`_emit`'s parameters."""
        if self.emission == "categorical":
            return dist.Categorical(logits=params)
        return self.emitter.law(params)

    def _features(self, params: Tensor) -> Tensor:
        """``q(w_t | w_{<t})`` as features ``(..., P')`` given :meth:`_emit`'s parameters: the symbols'
        probabilities ``(..., V)``, or the emission's :meth:`~pyroseq.emissions.Emission.features` (a
        frame's key probabilities)."""
        if self.emission == "categorical":
            return torch.softmax(params, dim=-1)
        return self.emitter.features(params)

    @property
    def _feature_dim(self) -> int:
        """P', the length of :meth:`_features`."""
        return self.vocab_size if self.emission == "categorical" else self.emitter.feature_dim

    def _first_input(self, batch_size: int, device: torch.device) -> Tensor:
        """What step 1 is fed: BOS ``(B,)``, or a silent frame ``(B, F)``."""
        if self.emission == "categorical":
            return torch.full((batch_size,), Vocabulary.bos_id, dtype=torch.long, device=device)
        return torch.zeros(batch_size, self.emitter.obs_dim, device=device)

    def teacher_forced_logits(self, ids: Tensor) -> Tensor:
        """The emission's parameters of ``q(w_t | w_{<t})`` at every step, fed the true symbols (BOS first)
        or frames (a silent frame first): logits ``(B, T, V)``, or ``(B, T, P)`` for frames."""
        if self.emission == "categorical":
            return super().teacher_forced_logits(ids)
        return self._teacher_forced(ids)[1]

    def checked_inputs(self, ids: Tensor | None, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        """Symbol ids ``(B, T)``, or frames ``(B, T, F)`` for an emission of vectors, and the mask checked."""
        if self.emission == "categorical":
            return super().checked_inputs(ids, mask)
        return self.emitter.check_observations(ids, mask, who=type(self).__name__)

    def _step(self, state: Tensor, prev_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step: the top layer's ``h_t`` ``(B, H)``, the logits ``(B, V)``, the new state ``(B, S)``."""
        output, hidden = self.rnn(self.embed(prev_ids)[:, None, :], self._unpack(state))  # (B, 1, H)
        output = output[:, 0]
        return output, self._emit(output), self._pack(hidden)

    def step(self, state: Tensor, prev_ids: Tensor) -> tuple[Tensor, Tensor]:
        _, logits, state = self._step(state, prev_ids)
        return logits, state

    # Runs over a whole batch.

    def _teacher_forced(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher-forced run in one RNN call: top-layer states ``(B, T, H)`` and logits ``(B, T, V)``."""
        B = ids.shape[0]
        bos = self._first_input(B, ids.device).to(ids.dtype).unsqueeze(1)  # (B, 1[, F])
        inputs = torch.cat([bos, ids[:, :-1]], dim=1)  # (B, T[, F]): w_0..w_{T-1}
        outputs, _ = self.rnn(self.embed(inputs), self._unpack(self.initial_state(B)))  # (B, T, H)
        return outputs, self._emit(outputs)

    def _unroll(
        self, batch_size: int, length: int, next_input: Callable[[int, Tensor], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Run step by step, feeding ``next_input(t, logits_t)`` (0-based ``t``) after step ``t``.

        Returns the top-layer states ``(B, T, H)`` and the logits ``(B, T, V)``.
        """
        state = self.initial_state(batch_size)
        prev = self._first_input(batch_size, state.device)
        outputs, logits = [], []
        for t in range(length):
            output, logits_t, state = self._step(state, prev)
            outputs.append(output)
            logits.append(logits_t)
            prev = next_input(t, logits_t)
        return torch.stack(outputs, dim=1), torch.stack(logits, dim=1)

    def _scheduled(self, ids: Tensor, teacher_prob: float) -> tuple[Tensor, Tensor]:
        """Scheduled sampling: feed ``w_{t-1}`` with probability ``teacher_prob``, else the model's sample."""

        def next_input(t: int, logits_t: Tensor) -> Tensor:
            own = self._law(logits_t.detach()).sample()  # (B,), or (B, F) frames
            use_truth = torch.rand(own.shape[:1], device=own.device) < teacher_prob  # (B,)
            return torch.where(use_truth.view(-1, *(1,) * (own.dim() - 1)), ids[:, t], own)

        return self._unroll(ids.shape[0], ids.shape[1], next_input)

    def _free_running(self, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The model fed its own draws for the ``T`` steps of ``mask`` ``(B, T)`` (no Pyro sites); the states
        keep their gradient path.

        Returns the top-layer states ``(B, T, H)``, the emission's parameters ``(B, T, V)`` (or ``(B, T, P)``
        for frames) and each run's own length ``(B,)``: for symbols ``min(first EOS + 1, T)``, the steps up
        to and including the first EOS it drew; for frames, which have no EOS, the data's, ``mask.sum(-1)``.
        """
        drawn = []

        def next_input(t: int, params_t: Tensor) -> Tensor:
            own = self._law(params_t.detach()).sample()  # (B,), or (B, F) frames
            drawn.append(own)
            return own

        outputs, params = self._unroll(mask.shape[0], mask.shape[1], next_input)
        if self.emission != "categorical":
            return outputs, params, mask.sum(-1)
        lengths = (first_eos(torch.stack(drawn, dim=1)) + 1).clamp(max=mask.shape[1])  # (B,)
        return outputs, params, lengths

    def _fit_run(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The run that training scores: teacher-forced, or scheduled sampling in training mode."""
        if self.training and self.teacher_prob < 1.0:
            return self._scheduled(ids, self.teacher_prob)
        return self._teacher_forced(ids)

    def _observe(self, logits: Tensor, ids: Tensor, mask: Tensor) -> None:
        for t in range(ids.shape[1]):
            pyro.sample(f"w_{t + 1}", self._law(logits[:, t]).mask(mask[:, t]), obs=ids[:, t])

    def _generate(self, mask: Tensor) -> None:
        def next_input(t: int, logits_t: Tensor) -> Tensor:
            return pyro.sample(f"w_{t + 1}", self._law(logits_t).mask(mask[:, t]))

        with torch.no_grad():
            self._unroll(mask.shape[0], mask.shape[1], next_input)

    def forward(self, ids: Tensor | None, mask: Tensor) -> None:
        """The Pyro model: observed sites ``w_1..w_T`` in the plate ``seqs``; draws them when ``ids`` is None.

        A training pass that follows an optimiser step first advances the training step (see the module
        docstring).

        Args:
            ids: ``(B, T)`` long, or ``None`` to generate (free-running; ``mask`` gives the lengths).
            mask: ``(B, T)`` bool, True on real steps.
        """
        if ids is not None and torch.is_grad_enabled():
            if self.training:
                self._count_training_step(ids, mask)
            else:
                self._check_not_trained_in_eval_mode()
        self._model(ids, mask)

    def _check_not_trained_in_eval_mode(self) -> None:
        """Warn if an optimiser stepped since the latest eval-mode pass with gradients: it is training the
        model in eval mode, where what :meth:`_training_mode_only` names is off."""
        steps = self.optimiser_steps
        if self._training_mode_only() is not None and self._steps_at_eval not in (None, steps):
            warnings.warn(
                f"{type(self).__name__} is in eval mode (as load_run returns it), so its "
                f"{self._training_mode_only()} is off and its training step does not advance: "
                "call model.train() before training it",
                stacklevel=1,  # the model, not torch's module call
            )
        self._steps_at_eval = steps

    def _training_mode_only(self) -> str | None:
        """What this model's training does in training mode only (``None``: nothing)."""
        return None if self.schedule is None else "scheduled sampling"

    def _model(self, ids: Tensor | None, mask: Tensor) -> None:
        with pyro.plate("seqs", mask.shape[0], dim=-1):
            if ids is None:
                self._generate(mask)
                return
            _, logits = self._fit_run(ids)
            self._observe(logits, ids, mask)

    @property
    def supports_jit(self) -> bool:
        return self.schedule is None

    def _count_training_step(self, ids: Tensor, mask: Tensor) -> None:
        """Call :meth:`train_hook` with the next step if an optimisation step was taken since the latest
        training pass; warn (and count it) if the parameters changed without one."""
        if self._steps_at_pass is None:  # the first training pass: step 0, with the model as it stands
            self._steps_at_pass = self.optimiser_steps
            self._emitter_at_pass = self._output_bias().detach().clone()
            return
        if self.optimiser_steps == self._steps_at_pass:
            if self._emitter_at_pass is None or torch.equal(self._output_bias(), self._emitter_at_pass):
                return
            warnings.warn(
                f"{type(self).__name__}'s parameters changed since its latest training pass, but no torch "
                f"optimiser stepped them: counted as training step {self.training_step + 1}; call "
                "model.advance() after each update that is not a torch optimiser's step",
                stacklevel=1,
            )
        self.train_hook(self.training_step + 1, Batch(ids, mask, mask.sum(-1)))

    def _output_bias(self) -> Tensor:
        """The emitter's output bias (of symbols or of frames), which every optimisation step moves."""
        return emitter_output_layer(self).bias

    def train_hook(self, step: int, batch: Batch) -> dict[str, float]:
        """Prepare training step ``step`` on ``batch``: set the teacher probability of scheduled sampling.

        :class:`~pyroseq.infer.Trainer` calls it before each step; under plain ``SVI`` the model calls it
        itself. Returns the figures to log, ``{}`` without a schedule.
        """
        self.training_step = step
        self._steps_at_pass = self.optimiser_steps
        self._emitter_at_pass = self._output_bias().detach().clone()
        if self.schedule is None:
            return {}
        self.teacher_prob = self.schedule.teacher_prob(step)
        return {"teacher_prob": self.teacher_prob}

    def extra_state_dict(self) -> dict[str, Any]:
        """The training step, so that a loaded model continues its schedule under plain SVI too."""
        return {"training_step": self.training_step}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state_dict`; the next training pass is the step after the saved one."""
        self.training_step = int(state.get("training_step", 0))  # absent from earlier checkpoints
        self._steps_at_pass = -1
        if self.schedule is not None:
            self.teacher_prob = self.schedule.teacher_prob(self.training_step)
