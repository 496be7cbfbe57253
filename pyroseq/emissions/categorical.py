"""The categorical emission: one symbol per step, ``p(w_t | h_t) = Categorical(softmax(g(h_t)))``.

PAD and BOS get logit ``-inf`` (see :func:`mask_special_logits`): the model puts its mass on real symbols and
EOS only.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor

from pyroseq.checks import check_inputs, check_vocab_size
from pyroseq.data.vocab import Vocabulary
from pyroseq.emissions.base import Emission, emitter_network
from pyroseq.errors import DataError

__all__ = ["CategoricalEmission", "mask_special_logits", "symbol_log_prob"]


# The ids of PAD and BOS, one small index tensor per device: mask_special_logits runs every time step.
_SPECIAL_IDS: dict[torch.device, Tensor] = {}


def mask_special_logits(logits: Tensor) -> Tensor:
    """Set the logits of PAD and BOS to ``-inf``: no model emits them."""
    index = _SPECIAL_IDS.get(logits.device)
    if index is None:
        index = torch.tensor([Vocabulary.pad_id, Vocabulary.bos_id], device=logits.device)
        _SPECIAL_IDS[logits.device] = index
    return logits.index_fill(-1, index, float("-inf"))


def symbol_log_prob(logits: Tensor, ids: Tensor) -> Tensor:
    """``log softmax(logits)`` gathered at the symbols ``ids``, broadcast against ``logits.shape[:-1]``."""
    index = ids.expand(logits.shape[:-1]).unsqueeze(-1)  # (..., 1)
    return torch.log_softmax(logits, dim=-1).gather(-1, index).squeeze(-1)


class CategoricalEmission(Emission):
    """``p(w_t | h_t) = Categorical(softmax(g(h_t)))`` over V symbols, PAD and BOS masked.

    ``emission(h)`` gives the logits ``g(h)`` ``(..., V)`` before masking; :meth:`logits` masks them.

    Args:
        state_dim: D, the dimension of the state.
        obs_dim: V, the number of symbols including PAD, BOS and EOS.
        hidden: hidden width of the emitter MLP ``D -> hidden -> V``; ``None`` for a linear ``D -> V``.
        layers: the MLP's hidden layers (:func:`~pyroseq.emissions.base.emitter_network`).
        activation: the nonlinearity after each hidden layer, ``"tanh"`` or ``"relu"``.

    Example:
        >>> emission = CategoricalEmission(state_dim=4, obs_dim=6, hidden=8)
        >>> law = emission.distribution(torch.randn(3, 4))
        >>> law.batch_shape, law.event_shape, bool(law.probs[:, :2].eq(0).all())  # PAD, BOS never
        (torch.Size([3]), torch.Size([]), True)
    """

    observations = "symbols"

    def __init__(
        self,
        *,
        state_dim: int,
        obs_dim: int,
        hidden: int | None = 64,
        layers: int = 1,
        activation: str = "tanh",
    ) -> None:
        check_vocab_size(obs_dim)
        super().__init__()
        self.obs_dim = obs_dim
        self.net = emitter_network(state_dim, obs_dim, hidden, layers=layers, activation=activation)
        self.register_load_state_dict_pre_hook(_emitter_keys_before_families)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)  # (..., V)

    @staticmethod
    def logits(params: Tensor) -> Tensor:
        """The logits with PAD and BOS at ``-inf``, ``(..., V)``."""
        return mask_special_logits(params)

    def law(self, params: Tensor) -> dist.Categorical:
        return dist.Categorical(logits=self.logits(params))

    def features(self, params: Tensor) -> Tensor:
        return torch.softmax(self.logits(params), dim=-1)  # (..., V): each symbol's probability

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """``log softmax`` gathered at the symbols ``value`` (broadcast against ``params.shape[:-1]``)."""
        return symbol_log_prob(self.logits(params), value)

    def check_observations(
        self, obs: Tensor | None, mask: Tensor, *, who: str
    ) -> tuple[Tensor | None, Tensor]:
        if isinstance(obs, Tensor) and obs.dim() == 3:
            raise DataError(
                f"{who}: got frames of shape {tuple(obs.shape)}, but this model emits symbols: it takes ids "
                "(B, T) (frames need emission='bernoulli' or 'normal')"
            )
        return check_inputs(obs, mask, vocab_size=self.obs_dim, who=who)


def _emitter_keys_before_families(module, state_dict, prefix, *args) -> None:
    """Accept a state dict saved before the emission families, whose emitter network was the module itself
    (``emitter.weight``, ``emitter.0.weight``) rather than its ``net``."""
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "net.")]:
        state_dict[prefix + "net." + key[len(prefix) :]] = state_dict.pop(key)
