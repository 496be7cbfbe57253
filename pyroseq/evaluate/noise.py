"""Does a state-space model use its noise? Per-step observation entropy, noise-output mutual information,
and the activity of each noise dimension under the guide.

For a state-space model ``h_t = f(xi_t; h_{t-1})``, ``w_t ~ p(w_t | h_t)``, two figures per step t under
the prior:

* the **observation-model entropy** ``E[H(p(w_t | h_t))]`` under the prior: how much randomness the
  emission adds on its own;
* the **mutual information** ``I(xi_t; w_t | xi_{<t})``: how much of ``w_t`` the fresh noise decides.
  Given the prefix ``h_{t-1}`` (a function of ``xi_{<t}``), ``h_t`` is a bijection of ``xi_t``, so this
  is ``I(h_t; w_t | h_{t-1}) = H(E[p(w_t | h_t)]) - E[H(p(w_t | h_t))]``, ``h_t ~ p(h_t | h_{t-1})``.

Both are estimated by nested Monte Carlo: N outer prefixes ``h_{t-1}`` from the prior, M inner draws of
``h_t`` for each. Schmidt & Hofmann (2018, Fig. 3) plot the per-step MI as box plots over prefixes and find
it largest at t = 1. Details in ``docs/evaluation.md``.

Both figures are **conditioned on the word still running at step t** (no EOS among ``w_{<t}``): a step
after a word's end emits nothing, and averaging over such prefixes would mix in states no word reaches.
Given the prefix, the running event depends only on the emissions before t, so conditioning reweights
each outer prefix by its probability of still running, ``prod_{s<t} (1 - p(EOS | h_s))``, and leaves its
per-prefix values unchanged.

A third figure looks at the noise from the data's side: the **activity** of noise dimension d at step t
(Burda, Grosse & Salakhutdinov 2016, "active units"), ``A_{t,d} = Var_w(E_{q(h | w)}[xi_{t,d}])`` with
``xi_t = f^{-1}(h_t; h_{t-1})`` the model's noise behind the guide's states: a dimension whose posterior
mean does not move with the sequence carries nothing about it (:func:`noise_activity`).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro import poutine
from torch import Tensor
from tqdm.auto import tqdm

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError
from pyroseq.models.base import StateSpaceModel

__all__ = [
    "NoiseUsage",
    "noise_usage",
    "plot_noise_usage",
    "ACTIVE_THRESHOLD",
    "NoiseActivity",
    "noise_activity",
]

ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active when its activity exceeds this


@dataclass(frozen=True)
class NoiseUsage:
    """Per-step noise usage of a state-space model, one value per outer prefix (for box plots).

    Attributes:
        mutual_information: ``(T, N)`` nats, ``H(mean_m p(w_t | h_t^m)) - mean_m H(p(w_t | h_t^m))`` for
            each outer prefix ``h_{t-1}^n``.
        entropy: ``(T, N)`` nats, ``mean_m H(p(w_t | h_t^m))`` for each outer prefix.
        running: ``(T, N)``, the probability that the word is still running at step t given prefix n,
            ``prod_{s<t} (1 - p(EOS | h_s^n))`` (1 at t = 1): the weight of each prefix in every summary.
        num_inner: M, the inner draws per prefix.
    """

    mutual_information: Tensor
    entropy: Tensor
    running: Tensor
    num_inner: int

    @property
    def length(self) -> int:
        return self.entropy.shape[0]

    @property
    def num_outer(self) -> int:
        return self.entropy.shape[1]

    @property
    def running_probability(self) -> Tensor:
        """``(T,)`` estimate of the probability that a word is still running at step t."""
        return self.running.mean(dim=1)

    def _weights(self) -> Tensor:
        """``(T, N)``: each prefix's weight in the step's running-conditioned average (rows sum to 1)."""
        return self.running / self.running.sum(dim=1, keepdim=True)

    @property
    def mean_mutual_information(self) -> Tensor:
        """``(T,)`` estimate of ``I(xi_t; w_t | xi_{<t}, word running at t)``."""
        return (self._weights() * self.mutual_information).sum(dim=1)

    @property
    def mean_entropy(self) -> Tensor:
        """``(T,)`` estimate of ``E[H(p(w_t | h_t)) | word running at t]``."""
        return (self._weights() * self.entropy).sum(dim=1)

    def quantiles(self, values: Tensor, q: Sequence[float]) -> Tensor:
        """``(T, len(q))``: running-weighted quantiles of per-prefix ``values`` ``(T, N)`` at each step
        (the inverse of the weighted empirical distribution function)."""
        order = values.argsort(dim=1)
        sorted_values = values.gather(1, order)
        cdf = self._weights().gather(1, order).cumsum(dim=1)  # (T, N)
        levels = torch.tensor(q, dtype=cdf.dtype).expand(values.shape[0], -1).contiguous()
        index = torch.searchsorted(cdf, levels).clamp(max=values.shape[1] - 1)  # (T, len(q))
        return sorted_values.gather(1, index)

    @property
    def mutual_information_quartiles(self) -> Tensor:
        """``(T, 3)``: the running-weighted 25th, 50th and 75th percentiles of the per-prefix MI."""
        return self.quantiles(self.mutual_information, (0.25, 0.5, 0.75))

    def to_dict(self) -> dict:
        """Per-step running-conditioned means, standard errors and MI quartiles, JSON-serialisable.

        The standard error of a weighted mean ``sum_n a_n x_n`` (weights summing to 1) is the delta-method
        ``sqrt(sum_n a_n^2 (x_n - mean)^2)``, which is ``std_n / sqrt(N)`` for equal weights.
        """
        weights = self._weights()

        def stderr(x: Tensor, mean: Tensor) -> list[float]:
            if self.num_outer < 2:
                return [float("nan")] * self.length
            spread = (weights**2 * (x - mean[:, None]) ** 2).sum(dim=1)
            return (spread * self.num_outer / (self.num_outer - 1)).sqrt().tolist()

        mi, entropy = self.mean_mutual_information, self.mean_entropy
        return {
            "length": self.length,
            "num_outer": self.num_outer,
            "num_inner": self.num_inner,
            "conditioned_on": "the word still running at step t",
            "running_probability": self.running_probability.tolist(),
            "mutual_information_nats": mi.tolist(),
            "mutual_information_stderr": stderr(self.mutual_information, mi),
            "mutual_information_quartiles": self.mutual_information_quartiles.tolist(),
            "entropy_nats": entropy.tolist(),
            "entropy_stderr": stderr(self.entropy, entropy),
        }


def _entropy(log_p: Tensor) -> Tensor:
    """``H = -sum_v p_v log p_v`` over the last dim, with ``0 log 0 = 0``."""
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, 0.0).sum(-1)


@torch.no_grad()
def noise_usage(
    model: StateSpaceModel,
    *,
    length: int,
    num_outer: int = 100,
    num_inner: int = 100,
    chunk_size: int = 10,
    progress: bool = True,
) -> NoiseUsage:
    """Nested Monte Carlo estimates of per-step observation entropy and noise-output mutual information.

    Outer: ``h_{0:T-1}^n`` from the prior, ``n = 1..N`` (``h_0`` for every n at t = 1). Inner: for each
    prefix and step, ``h_t^{n,m} ~ p(h_t | h_{t-1}^n)``, ``m = 1..M``. Then with ``p_m = p(w_t | h_t^{n,m})``

        entropy[t, n] = mean_m H(p_m)
        MI[t, n]      = H(mean_m p_m) - mean_m H(p_m)
        running[t, n] = prod_{s<t} (1 - p(EOS | h_s^n))

    and the summaries of :class:`NoiseUsage` average over prefixes with weights ``running[t, n]``: they are
    conditioned on the word still running at step t.

    ``H(mean of M)`` is biased low by O(1/M) (concavity), so the MI estimate is biased low by O(1/M);
    it is exactly 0 when the emission ignores the state.

    Args:
        model: a state-space model.
        length: T, the number of steps.
        num_outer: N prefixes.
        num_inner: M >= 2 draws per prefix and step (with one draw the mixture is that draw, and the MI
            estimate is exactly 0 whatever the model).
        chunk_size: prefixes per batch; memory is about ``chunk_size x T x M x V`` floats.
        progress: show a tqdm progress bar over chunks.
    """
    for name, value in {"length": length, "num_outer": num_outer, "num_inner": num_inner}.items():
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if num_inner < 2:
        raise ConfigError(
            f"num_inner must be at least 2, got {num_inner}: with one inner draw the MI estimate is 0 "
            "whatever the model"
        )
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    h0 = model.initial_state((num_outer,))  # (N, D)
    prefixes = h0[:, None]  # (N, 1, D)
    if length > 1:
        prefixes = torch.cat([prefixes, model.sample_states(num_outer, length - 1)], dim=1)  # (N, T, D)
    log_p_eos = torch.log_softmax(model.emission_logits(prefixes[:, 1:]), dim=-1)[..., Vocabulary.eos_id]
    log_survive = torch.log1p(-log_p_eos.exp()).cumsum(dim=1)  # (N, T-1): no EOS at steps 1..t-1
    running = torch.cat([log_survive.new_zeros(num_outer, 1), log_survive], dim=1).exp()  # (N, T)
    mi, entropy = [], []
    starts = range(0, num_outer, chunk_size)
    for start in tqdm(starts, desc="noise usage", unit="chunk", disable=not progress):
        h_prev = prefixes[start : start + chunk_size]  # (n, T, D)
        n, T, D = h_prev.shape
        h = model.transition(h_prev.reshape(n * T, D).repeat(num_inner, 1)).sample()  # (M * n * T, D)
        log_p = torch.log_softmax(model.emission_logits(h), dim=-1)
        log_p = log_p.reshape(num_inner, n, T, -1)  # (M, n, T, V)
        mean_entropy = _entropy(log_p).mean(0)  # (n, T)
        mixture = torch.logsumexp(log_p, dim=0) - math.log(num_inner)  # (n, T, V)
        mi.append(_entropy(mixture) - mean_entropy)
        entropy.append(mean_entropy)
    return NoiseUsage(
        mutual_information=torch.cat(mi).T.double().cpu(),  # (T, N)
        entropy=torch.cat(entropy).T.double().cpu(),  # (T, N)
        running=running.T.double().cpu(),  # (T, N)
        num_inner=num_inner,
    )


def plot_noise_usage(result: NoiseUsage, path: str | Path) -> Path:
    """Save per-step box plots (over outer prefixes) of the MI and the observation entropy as a PNG.

    The boxes are running-weighted (see :class:`NoiseUsage`): quartiles and median, whiskers at the 5th and
    95th percentiles, a marker at the mean. Uses matplotlib's object-oriented Agg canvas, so it needs no
    display and leaves pyplot's state alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: keeps matplotlib off CLI startup
    from matplotlib.figure import Figure

    path = Path(path)
    steps = list(range(1, result.length + 1))
    fig = Figure(figsize=(max(6.0, 0.5 * result.length + 2), 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_mi, ax_h = fig.subplots(2, 1, sharex=True)
    for ax, values, mean in (
        (ax_mi, result.mutual_information, result.mean_mutual_information),
        (ax_h, result.entropy, result.mean_entropy),
    ):
        q = result.quantiles(values, (0.05, 0.25, 0.5, 0.75, 0.95)).tolist()
        stats = [
            dict(whislo=a, q1=b, med=c, q3=d, whishi=e, mean=m, fliers=[])
            for (a, b, c, d, e), m in zip(q, mean.tolist(), strict=True)
        ]
        ax.bxp(stats, positions=steps, showmeans=True)
    ax_mi.set_ylabel(r"$I(\xi_t; w_t \mid \xi_{<t})$ (nats)")
    draws = f"{result.num_outer} prefixes x {result.num_inner} inner draws"
    ax_mi.set_title(f"noise usage given the word still running: {draws}")
    ax_h.set_ylabel(r"$E\,H(p(w_t \mid h_t))$ (nats)")
    ax_h.set_xlabel("step t")
    fig.savefig(path, dpi=120)
    return path


@dataclass(frozen=True)
class NoiseActivity:
    """The activity of each noise dimension at each step (Burda et al. 2016), from :func:`noise_activity`.

    Attributes:
        activity: ``(T, D)``, ``A_{t,d} = Var_w(E_q[xi_{t,d} | w])`` over the sequences still running at
            step t, NaN where fewer than 2 run.
        posterior_variance: ``(T, D)``, ``E_w[Var_q(xi_{t,d} | w)]`` over the running sequences: near 1
            (the prior's) for a dimension the guide leaves at the prior, NaN where none runs.
        running: ``(T,)`` long, how many sequences are still running at step t.
        num_samples: K, the guide's draws per sequence.
        threshold: the activity above which a dimension counts as active.
    """

    activity: Tensor
    posterior_variance: Tensor
    running: Tensor
    num_samples: int
    threshold: float = ACTIVE_THRESHOLD

    @property
    def dimension_activity(self) -> Tensor:
        """``(D,)``: each dimension's activity averaged over the steps, weighted by the running sequences.

        Steps with fewer than 2 running sequences (no variance) weigh nothing.
        """
        weights = torch.where(self.running >= 2, self.running, 0).to(self.activity.dtype)  # (T,)
        values = self.activity.nan_to_num(0.0)  # (T, D)
        return (weights[:, None] * values).sum(0) / weights.sum()

    @property
    def active(self) -> Tensor:
        """``(D,)`` bool: the dimensions whose :attr:`dimension_activity` exceeds :attr:`threshold`."""
        return self.dimension_activity > self.threshold

    @property
    def num_active(self) -> int:
        """How many of the D noise dimensions are active."""
        return int(self.active.sum())

    def to_dict(self) -> dict:
        """The figures as JSON-serialisable lists (NaN as ``None``): ``num_active`` of ``state_dim``, the
        per-dimension summaries and the per-step ``(T, D)`` tables."""

        def listed(x: Tensor) -> list:
            return [[None if math.isnan(v) else v for v in row] for row in x.tolist()]

        return {
            "num_active": self.num_active,
            "state_dim": self.activity.shape[1],
            "threshold": self.threshold,
            "num_samples": self.num_samples,
            "num_sequences": int(self.running[0]),
            "running": self.running.tolist(),
            "dimension_activity": self.dimension_activity.tolist(),
            "activity": listed(self.activity),
            "posterior_variance": listed(self.posterior_variance),
        }


@torch.no_grad()
def noise_activity(
    model: StateSpaceModel,
    guide: Callable[..., None],
    ids: Tensor,
    mask: Tensor,
    *,
    num_samples: int = 16,
    threshold: float = ACTIVE_THRESHOLD,
) -> NoiseActivity:
    """How much each noise dimension of a state-space model varies with the data: active units per step.

    Burda, Grosse & Salakhutdinov (ICLR 2016, "Importance Weighted Autoencoders", sec. 5.2) call a latent
    unit active when ``A_u = Cov_x(E_{q(u | x)}[u]) > 0.01``. Here the units are the model's noise
    ``xi_t = f^{-1}(h_t; h_{t-1})`` behind the guide's states (:meth:`StateSpaceModel.noise`): for each
    step t and dimension d,

        A_{t,d} = Var_w(E_q[xi_{t,d} | w])       over the sequences w still running at step t

    The posterior mean is estimated from K draws per sequence (``mbar``, with within-sequence variance
    ``s^2``), and the sample variance of ``mbar`` over the n running sequences overstates ``A`` by
    ``E_w[Var_q] / K``, so that term is removed (the between-groups component of a one-way ANOVA):

        A_hat_{t,d} = (1 / (n - 1)) sum_w (mbar_w - mean_w mbar)^2 - (1 / (n K)) sum_w s^2_w

    which is unbiased (it can fall slightly below 0 for an inactive dimension) and exactly the sample
    variance of the posterior means when the guide's states are a function of the data. Padded steps never
    count.

    Args:
        model: a state-space model whose transition is a push-forward of noise (any DSSM).
        guide: any guide of the model that declares its site ``"h"`` inside ``pyro.plate("seqs", B, dim=-1)``
            (a :class:`~pyroseq.guides.FutureGuide`, a user's own, a Pyro autoguide fitted to this batch);
            it is run once with its sites vectorised over K particles at dim -2.
        ids: ``(B, T)`` symbol ids (or ``(B, T, F)`` frames), the sequences w, ``B >= 2``; checked as the
            model checks its inputs.
        mask: ``(B, T)`` bool (or 0/1 integers), True on real steps.
        num_samples: K >= 2 draws of the guide per sequence.
        threshold: the activity (a finite number >= 0) above which a dimension counts as active.

    Returns:
        a :class:`NoiseActivity`.

    Raises:
        ConfigError: ``num_samples`` below 2, a negative or non-finite ``threshold``, a model without
            noise (not a state-space model), or a guide without a site ``"h"`` of the model's shape.
        DataError: inputs the model refuses, or fewer than 2 sequences (the activity is a variance across
            them).

    Example:
        >>> from pyroseq.data import pad_batch
        >>> from pyroseq.guides import FutureGuide
        >>> from pyroseq.models import DSSM
        >>> batch = pad_batch([[3, 4, 2], [5, 2], [4, 4, 2]])
        >>> model, guide = DSSM(vocab_size=8, state_dim=2), FutureGuide(vocab_size=8, state_dim=2)
        >>> result = noise_activity(model, guide, batch.ids, batch.mask, num_samples=4)
        >>> result.activity.shape, result.running.tolist()
        (torch.Size([3, 2]), [3, 3, 2])
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 2:
        raise ConfigError(
            f"num_samples must be an integer of at least 2, got {num_samples!r}: the posterior variance "
            "that corrects the activity's bias needs two draws per sequence",
            params=("num_samples",),
        )
    num_samples = operator.index(num_samples)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not (math.isfinite(threshold) and threshold >= 0)
    ):
        raise ConfigError(f"threshold must be a finite number >= 0, got {threshold!r}", params=("threshold",))
    if not isinstance(model, StateSpaceModel):
        raise ConfigError(
            f"noise_activity measures the noise of a state-space model (a DSSM), but this "
            f"{type(model).__name__} has no noise: its state is a function of the symbols it reads",
            params=("model",),
        )
    ids, mask = model.checked_inputs(ids, mask)  # the model's own checks: (B, T) shapes, a 0/1 mask
    if ids is None:
        raise DataError("noise_activity needs the sequences w whose posterior it measures, got ids=None")
    B, T = mask.shape
    if B < 2:
        raise DataError(
            f"noise_activity needs at least 2 sequences, got {B}: the activity is a variance across sequences"
        )
    D = model.state_dim
    with pyro.plate("num_particles_vectorized", num_samples, dim=-2):
        site = poutine.trace(guide).get_trace(ids, mask).nodes.get("h")
    shape = None if site is None else tuple(site["value"].shape)
    if shape is None or shape[-3:] != (B, T, D) or shape[:-3] not in ((), (1,), (num_samples,)):
        found = "no site 'h'" if shape is None else f"a site 'h' of shape {shape}"
        raise ConfigError(
            f"the guide must declare the model's state trajectory, a site 'h' of shape (K, B, T, D) = "
            f"({num_samples}, {B}, {T}, {D}) under K vectorised particles; the guide has {found}"
        )
    xi = model.noise(site["value"].expand(num_samples, B, T, D)).double()  # (K, B, T, D)
    real = mask[..., None]  # (B, T, 1)
    running = mask.sum(0)  # (T,)
    n = running.to(xi.dtype)[:, None]  # (T, 1)
    means = xi.mean(0)  # (B, T, D): E_q[xi | w] per sequence
    spread = torch.where(real, xi.var(0), 0.0).sum(0) / n  # (T, D): E_w Var_q(xi | w)
    centre = torch.where(real, means, 0.0).sum(0) / n  # (T, D)
    between = torch.where(real, (means - centre).square(), 0.0).sum(0) / (n - 1)  # (T, D)
    activity = between - spread / num_samples  # (T, D); 0 / 0 is NaN where fewer than 2 sequences run
    return NoiseActivity(
        activity=activity.cpu(),
        posterior_variance=spread.cpu(),
        running=running.cpu(),
        num_samples=num_samples,
        threshold=threshold,
    )
