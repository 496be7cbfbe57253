"""Teacher-probability schedules for scheduled sampling (Bengio et al., 2015).

At training step ``i`` the model is fed the ground-truth previous symbol with probability ``eps_i`` and its
own sample otherwise. Bengio et al. let ``eps_i`` decay from 1 as training goes on:

* linear:            ``eps_i = max(eps_min, k - c i)``       (``0 <= k <= 1``, ``c > 0``)
* exponential:       ``eps_i = max(eps_min, k^i)``           (``0 < k < 1``)
* inverse sigmoid:   ``eps_i = k / (k + exp(i / k))``        (``k >= 1``)

and ``constant`` keeps ``eps_i = p`` (``p = 1`` is plain teacher forcing).

References:
    S. Bengio, O. Vinyals, N. Jaitly, N. Shazeer. Scheduled Sampling for Sequence Prediction with
    Recurrent Neural Networks. NeurIPS 2015. arXiv:1506.03099.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pyroseq.errors import ConfigError

__all__ = ["TeacherSchedule"]

# The parameters each kind takes: (required, optional).
_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("p",), ()),
    "linear": (("c",), ("k", "eps_min")),
    "exp": (("k",), ("eps_min",)),
    "invsigmoid": (("k",), ()),
}


@dataclass(frozen=True)
class TeacherSchedule:
    """The probability ``eps_i`` of feeding the ground truth at training step ``i``.

    Args:
        kind: ``"constant"``, ``"linear"``, ``"exp"`` or ``"invsigmoid"``.
        p: the constant probability (``constant`` only).
        k: offset (``linear``, default 1), base (``exp``) or rate (``invsigmoid``); see the module docstring.
        c: the slope of the linear decay (``linear`` only).
        eps_min: the floor of the linear and exponential decays (default 0).

    A parameter that the kind does not use raises :class:`~pyroseq.errors.ConfigError`, so that a typo in a
    configuration file cannot pass unnoticed.

    Examples:
        >>> schedule = TeacherSchedule(kind="linear", c=1e-3, eps_min=0.1)
        >>> [round(schedule.teacher_prob(i), 3) for i in (0, 500, 2000)]
        [1.0, 0.5, 0.1]
        >>> round(TeacherSchedule(kind="invsigmoid", k=100).teacher_prob(500), 3)
        0.403
    """

    kind: str = "constant"
    p: float | None = None
    k: float | None = None
    c: float | None = None
    eps_min: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _PARAMETERS:
            raise ConfigError(
                f"unknown teacher schedule kind {self.kind!r}; choose one of {list(_PARAMETERS)}"
            )
        required, optional = _PARAMETERS[self.kind]
        for name in ("p", "k", "c", "eps_min"):
            value = getattr(self, name)
            if value is None:
                if name in required:
                    raise ConfigError(f"teacher schedule {self.kind!r} needs the parameter {name!r}")
                continue
            if name not in required + optional:
                raise ConfigError(
                    f"teacher schedule {self.kind!r} takes {list(required + optional)}, not {name!r}"
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"teacher schedule parameter {name} must be a finite number, got {value!r}")
        self._check_range()

    def _check_range(self) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"teacher schedule {self.kind!r}: {what} ({self})")

        if self.eps_min is not None and not 0.0 <= self.eps_min <= 1.0:
            raise bad("eps_min must lie in [0, 1]")
        if self.kind == "constant" and not 0.0 <= self.p <= 1.0:
            raise bad("p must lie in [0, 1]")
        if self.kind == "linear":
            if self.c <= 0:
                raise bad("the slope c must be positive")
            if self.k is not None and not 0.0 <= self.k <= 1.0:
                raise bad("the offset k must lie in [0, 1]")
        if self.kind == "exp" and not 0.0 < self.k < 1.0:
            raise bad("the base k must lie in (0, 1)")
        if self.kind == "invsigmoid" and self.k < 1.0:
            raise bad("k must be at least 1")

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TeacherSchedule:
        """Build from a JSON dict such as ``{"kind": "invsigmoid", "k": 100}``."""
        if not isinstance(config, dict):
            raise ConfigError(
                f"a teacher schedule must be a dict like {{'kind': 'linear', 'c': 1e-3}}, got {config!r}"
            )
        unknown = set(config) - {"kind", "p", "k", "c", "eps_min"}
        if unknown:
            raise ConfigError(f"unknown teacher schedule parameters {sorted(unknown)} in {config!r}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """The JSON dict that :meth:`from_dict` inverts (unset parameters left out)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def teacher_prob(self, step: int) -> float:
        """``eps_step``: the probability of feeding the ground-truth symbol at training step ``step >= 0``."""
        if step < 0:
            raise ConfigError(f"the training step must be non-negative, got {step}")
        floor = self.eps_min or 0.0
        if self.kind == "constant":
            return float(self.p)
        if self.kind == "linear":
            k = 1.0 if self.k is None else self.k
            return max(floor, k - self.c * step)
        if self.kind == "exp":
            return max(floor, self.k**step)
        # invsigmoid; the exponent is clipped so that very late steps give 0 instead of an overflow
        return self.k / (self.k + math.exp(min(step / self.k, 700.0)))
