r"""A sequential Monte Carlo bound (FIVO / AESMC) over a state-space model's steps, the guide proposing.

For a sequence ``w_{1:T}`` and N particles, with the guide's step law ``q(h_t | h_{t-1}, w_{t:T})`` as the
proposal and the model's transition and emission as the target,

    h_t^i    ~ q(h_t | h_{t-1}^{a_i}, w_{t:T})                            (a_i: the particle's ancestor)
    alpha_t^i = p(w_t | h_t^i) p(h_t^i | h_{t-1}^{a_i}) / q(h_t^i | h_{t-1}^{a_i}, w_{t:T})
    log Z     = sum_t log sum_i wbar_{t-1}^i alpha_t^i,       wbar_t^i ∝ wbar_{t-1}^i alpha_t^i

and the particles are resampled (systematically, per sequence) where the effective sample size falls below
``ess_threshold * N``, the weights then uniform. ``Z`` is an unbiased estimate of ``p(w)``, so ``E[log Z] <=
log p(w)``: a bound that resampling keeps tighter than IWAE's at the same N on long sequences (Maddison et al.
2017; Le et al. 2018; Naesseth et al. 2018). Without resampling (``ess_threshold = 0``) it is IWAE_N. The
gradient flows through the draws (reparameterised) and the densities; the resampling's discrete ancestor
choices carry none (the usual biased but practical choice of all three papers).

Both laws are read off the sites: the guide's and the model's trajectory site (``"h"`` for pyroseq's
models, a :class:`~pyroseq.flows.trajectory.StateTrajectory`) give their ``step_law`` and initial state, so
any guide that draws its trajectory as one ``StateTrajectory`` proposes; the emission is the model's
``emission_log_prob`` (any emission family: symbols, binary or real-valued frames). It shares the particle
filter's resampling with :mod:`pyroseq.infer.smc`.

References:
    C. J. Maddison, D. Lawson, G. Tucker, N. Heess, M. Norouzi, A. Mnih, A. Doucet, Y. W. Teh. Filtering
    Variational Objectives. NeurIPS 2017. arXiv:1705.09279.
    T. A. Le, M. Igl, T. Rainforth, T. Jin, F. Wood. Auto-Encoding Sequential Monte Carlo. ICLR 2018.
    C. A. Naesseth, S. W. Linderman, R. Ranganath, D. M. Blei. Variational Sequential Monte Carlo.
    AISTATS 2018.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from torch import Tensor

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError
from pyroseq.flows.trajectory import StateTrajectory
from pyroseq.infer.annealing import ScaleLatents
from pyroseq.infer.importance import DifferentiableObjective
from pyroseq.infer.smc import check_ess_threshold, resample_below
from pyroseq.models.base import StateSpaceModel

__all__ = ["FIVO"]


class FIVO(DifferentiableObjective):
    r"""The filtering bound ``-sum_b log Z_b`` of a particle filter that proposes with the guide (FIVO/AESMC).

    See :mod:`pyroseq.infer.fivo`. A plain ``SVI`` objective with a ``differentiable_loss``, for a
    :class:`~pyroseq.models.base.StateSpaceModel` and a guide that draws the model's trajectory site as a
    :class:`~pyroseq.flows.trajectory.StateTrajectory` (:class:`~pyroseq.guides.FutureGuide`)::

        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), FIVO(num_particles=16))

    Args:
        num_particles: N >= 1 particles per sequence.
        ess_threshold: resample a sequence's particles when their ESS falls below this fraction of N (0:
            never, which gives IWAE_N; 1: at every step).
        site: the name of the trajectory site.

    Example:
        >>> from pyroseq.data import Vocabulary, pad_batch
        >>> from pyroseq.guides import FutureGuide
        >>> from pyroseq.models import DSSM
        >>> vocab = Vocabulary("ab")
        >>> batch = pad_batch([vocab.encode(w) for w in ["ab", "ba", "a"]])
        >>> model = DSSM(vocab_size=len(vocab), state_dim=2)
        >>> guide = FutureGuide(vocab_size=len(vocab), state_dim=2)
        >>> FIVO(num_particles=4).log_evidence(model, guide, batch.ids, batch.mask).shape  # one log Z a word
        torch.Size([3])
    """

    def __init__(self, *, num_particles: int = 8, ess_threshold: float = 0.5, site: str = "h") -> None:
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ConfigError(
                f"num_particles must be an integer N >= 1, got {num_particles!r}", params=("num_particles",)
            )
        check_ess_threshold(ess_threshold)
        super().__init__(num_particles=num_particles, max_plate_nesting=1)
        self.ess_threshold, self.site = ess_threshold, site

    def log_evidence(self, model: StateSpaceModel, guide: Callable, ids: Tensor, mask: Tensor) -> Tensor:
        """``log Z`` of each sequence, ``(B,)``: the filter's estimate of ``log p(w)``; ``ids`` are symbol ids
        ``(B, T)`` or frames ``(B, T, F)``, as the model observes them."""
        if not isinstance(model, StateSpaceModel):
            raise ConfigError(f"FIVO filters a state-space model's steps; {type(model).__name__} is not one")
        if any(isinstance(handler, ScaleLatents) for handler in _PYRO_STACK):
            # The filter scores the step laws itself, so a scale on the sites would be silently ignored.
            raise ConfigError(
                "FIVO does not anneal: it scores the state laws itself, so ScaleLatents (KL warm-up) would "
                "have no effect; train FIVO with kl_warmup=0 (warm up with another objective first)",
                params=("kl_warmup",),
            )
        ids, mask = model.checked_inputs(ids, mask)  # as the model takes them (frames as floats)
        N, (B, T) = self.num_particles, mask.shape
        proposal = self._trajectory_law(guide, ids, mask)  # batch (N, B)
        prior = self._trajectory_law(model, ids, mask)
        h_guide, h_model = proposal.initial, prior.initial  # (N, B, D): each its own h_0
        if h_guide.shape != h_model.shape:
            raise ConfigError(
                f"the guide's states have shape {tuple(h_guide.shape[2:])} and the model's "
                f"{tuple(h_model.shape[2:])}: give the guide state_dim={h_model.shape[-1]}",
                params=("state_dim",),
            )
        log_w = torch.full((N, B), -math.log(N), device=ids.device)  # normalised
        log_z = torch.zeros(B, device=ids.device)
        for t in range(T):
            live = mask[:, t]  # (B,)
            q = proposal.step_law(h_guide, t)
            h = q.rsample()  # (N, B, D)
            log_alpha = model.emission_log_prob(h, self._observed(model, ids, live, t))  # (N, B)
            log_alpha = log_alpha + prior.step_law(h_model, t).log_prob(h) - q.log_prob(h)
            unnormalised = log_w + log_alpha
            increment = torch.logsumexp(unnormalised, dim=0)  # (B,)
            log_z = log_z + torch.where(live, increment, torch.zeros_like(increment))
            # After a sequence's end its particles go on but count no more. The ancestors carry no gradient.
            states, log_w, _ = resample_below(
                h.transpose(0, 1), (unnormalised - increment).T, self.ess_threshold
            )
            h_model = h_guide = states.transpose(0, 1)  # (N, B, D)
            log_w = log_w.T  # (N, B)
        return log_z

    @staticmethod
    def _observed(model: StateSpaceModel, obs: Tensor, live: Tensor, t: int) -> Tensor:
        """Step ``t``'s observations, ``(B,)`` ids or ``(B, F)`` frames. After a sequence's end a valid
        observation stands in for the padding, EOS for PAD (probability 0) and zeros for a padded frame (of
        any value), so that the weight there, which counts no more, stays finite and so do the gradients."""
        if model.emits_symbols:
            return torch.where(live, obs[:, t], Vocabulary.eos_id)
        return torch.where(live[:, None], obs[:, t], 0.0)

    def _trajectory_law(self, fn: Callable, ids: Tensor, mask: Tensor) -> StateTrajectory:
        """The law of ``fn``'s trajectory site with N particles (batch ``(N, B)``), read without drawing it:
        ``fn`` runs up to that site (declaring its parameters to ``SVI`` on the way) and stops there."""
        stop = _StopAt(self.site)
        try:
            with stop, pyro.plate("num_particles_vectorized", self.num_particles, dim=-2):
                fn(ids, mask)
        except _Stopped:
            pass
        if not isinstance(stop.law, StateTrajectory):
            found = "no such site" if stop.law is None else type(stop.law).__name__
            raise ConfigError(
                f"FIVO proposes and scores with the step laws of the site {self.site!r} of "
                f"{type(fn).__name__}, a StateTrajectory; found {found}"
            )
        return stop.law

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Tensor:
        """``-sum_b log Z_b`` as a differentiable scalar."""
        return -self.log_evidence(model, guide, *args, **kwargs).sum()


class _Stopped(Exception):
    pass


class _StopAt(Messenger):
    """Record the law of the sample site ``name`` (after the plates have shaped it) and stop the program."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.law = name, None

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] == self.name:
            self.law = msg["fn"]
            raise _Stopped
