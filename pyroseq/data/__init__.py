"""Data: word frequency lists, running text, polyphonic piano rolls, the vocabulary and padded batches."""

from pyroseq.data.batch import Batch, pad_batch
from pyroseq.data.polyphonic import FrameBatch, load_polyphonic, pad_frames
from pyroseq.data.vocab import BOS, EOS, PAD, Vocabulary

__all__ = [
    "Batch",
    "pad_batch",
    "FrameBatch",
    "pad_frames",
    "load_polyphonic",
    "Vocabulary",
    "PAD",
    "BOS",
    "EOS",
]
