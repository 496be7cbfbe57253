"""Data: word frequency lists, running text, the vocabulary and padded batches."""

from pyroseq.data.batch import Batch, pad_batch
from pyroseq.data.vocab import BOS, EOS, PAD, Vocabulary

__all__ = ["Batch", "pad_batch", "Vocabulary", "PAD", "BOS", "EOS"]
