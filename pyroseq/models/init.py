r"""Initialising a model's emitter so that it starts from the symbols' unigram distribution.

A freshly built model emits every symbol with about the same probability, and its first hundreds of steps
go to learning how often each symbol occurs. Setting the output bias of the emitter to the symbols' log
unigram frequencies (Karpathy's char-rnn habit) starts it there instead: with the emitter's last layer
``logits = W a + b`` and

    b_v = log f_v,     f_v = (n_v + alpha) / sum_u (n_u + alpha)     over the symbols v a model emits

(``n_v`` the count of ``v`` in the data, ``alpha`` a small smoothing count, PAD and BOS left out: every
model masks their logits to ``-inf``), the emission ``softmax(W a + b)`` is the unigram distribution
wherever ``W a = 0``, and near it while the weights are small. For a DSSM that is every state at step 0;
for an RNN, every prefix.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError

__all__ = ["unigram_log_frequencies", "emitter_output_layer", "init_emitter_bias", "init_frame_bias"]


def unigram_log_frequencies(
    ids: Tensor, vocab_size: int, *, weights: Tensor | None = None, smoothing: float = 1.0
) -> Tensor:
    """``log f_v`` of every symbol, ``(V,)``: add-``smoothing`` frequencies of the symbols in ``ids``.

    PAD (the padding) and BOS are not counted and get ``-inf``; every other symbol of the vocabulary gets
    ``smoothing`` extra counts, so one that ``ids`` lacks keeps a finite log-frequency.

    Args:
        ids: long symbol ids of any shape: a padded batch ``(B, T)``, or a corpus's ids in one tensor.
        vocab_size: V, including PAD, BOS and EOS.
        weights: ``(B,)`` a count for each row of a ``(B, T)`` batch (a word list's counts, so that the
            frequencies are those of the words drawn from p(w)); ``None`` counts each row once.
        smoothing: ``alpha > 0``, the count added to every symbol.

    Example:
        >>> from pyroseq.data import Vocabulary, pad_batch
        >>> vocab = Vocabulary("ab")  # PAD, BOS, EOS, a, b
        >>> batch = pad_batch([vocab.encode("ab"), vocab.encode("a")])  # a a b, and two EOS
        >>> unigram_log_frequencies(batch.ids, len(vocab), smoothing=1.0).exp()
        tensor([0.0000, 0.0000, 0.3750, 0.3750, 0.2500])
    """
    if not smoothing > 0:
        raise ConfigError(f"smoothing must be positive (a count added to every symbol), got {smoothing}")
    if weights is not None:
        if ids.dim() != 2 or weights.shape != ids.shape[:1]:
            raise DataError(
                f"weights must hold one count per row of a (B, T) batch, got weights {tuple(weights.shape)} "
                f"for ids {tuple(ids.shape)}"
            )
        weights = weights.double()[:, None].expand(ids.shape).reshape(-1)  # (B T,)
    ids = ids.reshape(-1).long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise DataError(f"ids hold {int(ids.max())}, not a symbol of a vocabulary of size {vocab_size}")
    counts = torch.bincount(ids, weights=weights, minlength=vocab_size).double() + smoothing  # (V,)
    special = torch.tensor([Vocabulary.pad_id, Vocabulary.bos_id])
    counts[special] = 0.0
    return (counts / counts.sum()).log().float()  # (V,), -inf at PAD and BOS


def emitter_output_layer(model: nn.Module) -> nn.Linear:
    """The output layer of ``model.emitter``: its last ``nn.Linear`` (the layer that gives the logits).

    Raises:
        ConfigError: the module has no ``emitter``, the emitter has no ``nn.Linear``, or that layer has no
            bias.
    """
    emitter = getattr(model, "emitter", None)
    if not isinstance(emitter, nn.Module):
        raise ConfigError(
            f"{type(model).__name__} has no emitter: init_emitter_bias sets the bias of the last nn.Linear "
            "of a model's 'emitter' attribute (the DSSM's and the RNNs')"
        )
    linears = [m for m in emitter.modules() if isinstance(m, nn.Linear)]
    name = f"{type(model).__name__}.emitter"
    if not linears:
        raise ConfigError(f"{name} has no nn.Linear whose bias init_emitter_bias could set")
    output = linears[-1]
    if output.bias is None:
        raise ConfigError(f"{name}'s output layer has no bias (bias=False): there is nothing to set")
    return output


def init_emitter_bias(
    model: nn.Module, ids: Tensor, *, weights: Tensor | None = None, smoothing: float = 1.0
) -> Tensor:
    """Set the output bias of ``model.emitter`` to the symbols' log unigram frequencies in ``ids``.

    The emitter is the module's ``emitter`` attribute (every pyroseq model has one: the DSSM's linear or
    MLP ``g(h_t)``, the RNNs' output layer); its output layer is its last ``nn.Linear``, whose bias becomes
    ``log f_v`` of :func:`unigram_log_frequencies`. PAD and BOS, which every model masks, get bias 0 (a
    finite value, so that parameter checks pass). Weights are left as they are. Call it before training,
    for the baselines too, so that a comparison stays fair.

    Args:
        model: a module with an ``emitter`` whose last ``nn.Linear`` has a bias and V outputs.
        ids: long symbol ids of any shape (a padded batch, or a corpus's ids); PAD and BOS are not counted.
        weights: ``(B,)`` a count for each row of a ``(B, T)`` batch (``torch.as_tensor(corpus.counts)``
            with ``corpus.batch().ids``: the symbols' frequencies under p(w)); ``None``: each row once.
        smoothing: ``alpha > 0``, the count added to every symbol.

    Returns:
        the log-frequencies written, ``(V,)`` (``-inf`` at PAD and BOS).

    Raises:
        ConfigError: the module has no ``emitter``, or its last ``nn.Linear`` has no bias.

    Example:
        >>> import torch
        >>> from pyroseq.data import Vocabulary, pad_batch
        >>> from pyroseq.models import DSSM
        >>> vocab = Vocabulary("ab")
        >>> batch = pad_batch([vocab.encode(w) for w in ["ab", "a", "aab"]])
        >>> model = DSSM(vocab_size=len(vocab), state_dim=4)
        >>> log_f = init_emitter_bias(model, batch.ids)
        >>> _ = torch.nn.init.zeros_(emitter_output_layer(model).weight)  # the unigram law at any state
        >>> model.emission_logits(torch.randn(4)).softmax(-1).detach().round(decimals=3)
        tensor([0.0000, 0.0000, 0.3330, 0.4170, 0.2500])
    """
    output = emitter_output_layer(model)
    name = f"{type(model).__name__}.emitter"
    vocab_size = getattr(model, "vocab_size", output.out_features)
    if output.out_features != vocab_size:
        raise ConfigError(
            f"{name} ends in an nn.Linear with {output.out_features} outputs, not one per symbol of its "
            f"vocabulary ({vocab_size})"
        )
    log_f = unigram_log_frequencies(ids, output.out_features, weights=weights, smoothing=smoothing)
    with torch.no_grad():
        output.bias.copy_(torch.nan_to_num(log_f, neginf=0.0))
    return log_f


def init_frame_bias(model: nn.Module, frames: Tensor, *, smoothing: float = 0.5) -> Tensor:
    """Set the output bias of a Bernoulli emitter to each column's log-odds of being on in ``frames``.

    The frames' analogue of :func:`init_emitter_bias` (a piano-roll model then starts at each key's
    frequency): with ``n_f`` frames holding key ``f`` of ``N``, the bias is
    ``logit((n_f + alpha) / (N + 2 alpha))``.

    Args:
        model: a module whose ``emitter`` is the ``"bernoulli"`` emission (its last ``nn.Linear`` gives the
            logits, one per column).
        frames: ``(..., F)`` 0/1 frames (the training split's, concatenated).
        smoothing: ``alpha > 0``, the count added to each column's on and off counts.

    Returns:
        the log-odds written, ``(F,)``.
    """
    if not smoothing > 0:
        raise ConfigError(f"smoothing must be positive, got {smoothing}", params=("smoothing",))
    if getattr(model, "emission", None) != "bernoulli":
        raise ConfigError(
            f"init_frame_bias sets a Bernoulli emitter's bias; {type(model).__name__} emits "
            f"{getattr(model, 'emission', 'symbols')!r}",
            params=("model",),
        )
    output = emitter_output_layer(model)
    frames = frames.reshape(-1, frames.shape[-1]).double()  # (N, F)
    if output.out_features != frames.shape[-1]:
        raise ConfigError(
            f"the frames have {frames.shape[-1]} columns but {type(model).__name__}'s emitter gives "
            f"{output.out_features} logits",
            params=("frames",),
        )
    on = (frames.sum(0) + smoothing) / (frames.shape[0] + 2 * smoothing)  # (F,)
    log_odds = torch.logit(on).float()
    with torch.no_grad():
        output.bias.copy_(log_odds)
    return log_odds
