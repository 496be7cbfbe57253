"""A prefix tree over symbol sequences, so that many words are scored level by level, sharing prefixes.

Scoring the 10,000-word vocabulary one word at a time would repeat the work on every shared prefix
("th", "the", "there", ...) and loop in Python over words. The tree instead holds each distinct prefix
once; a level holds every prefix of one length, so a model is stepped once per level on a batch of
nodes: ``state(node) = step(state(parent), symbol(node))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import DataError

__all__ = ["PrefixTree"]


@dataclass(frozen=True)
class PrefixTree:
    """The distinct prefixes of a set of sequences, as a tree stored in flat tensors.

    Node 0 is the root, the empty prefix (symbol BOS, depth 0, parent -1); every other node is one
    distinct non-empty prefix, identified with its last symbol. The number of nodes is therefore the
    number of distinct prefixes, the empty one included.

    Attributes:
        parent: ``(N,)`` long, the node of the prefix one symbol shorter (-1 for the root).
        symbol: ``(N,)`` long, the last symbol of the prefix (BOS for the root).
        depth: ``(N,)`` long, the prefix length.
        levels: ``levels[d]`` is the ``(N_d,)`` long tensor of the nodes at depth ``d``, ``d = 0..L``.
        is_leaf: ``(N,)`` bool, True where no sequence continues the prefix.
        word_end: ``(W,)`` long, the node of each input sequence (its full prefix), in input order.
    """

    parent: Tensor
    symbol: Tensor
    depth: Tensor
    levels: list[Tensor]
    is_leaf: Tensor
    word_end: Tensor

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]]) -> PrefixTree:
        """Build the tree of ``sequences`` (lists of ids; words end in EOS).

        Duplicate sequences share their end node.
        """
        if len(sequences) == 0:
            raise DataError("cannot build a prefix tree of no sequences")
        children: dict[tuple[int, int], int] = {}
        parent, symbol, depth = [-1], [Vocabulary.bos_id], [0]
        word_end = []
        for seq in sequences:
            if len(seq) == 0:
                raise DataError("cannot build a prefix tree with an empty sequence")
            node = 0
            for s in seq:
                key = (node, int(s))
                child = children.get(key)
                if child is None:
                    child = len(parent)
                    children[key] = child
                    parent.append(node)
                    symbol.append(int(s))
                    depth.append(depth[node] + 1)
                node = child
            word_end.append(node)
        parent_t = torch.tensor(parent, dtype=torch.long)
        depth_t = torch.tensor(depth, dtype=torch.long)
        is_leaf = torch.ones(len(parent), dtype=torch.bool)
        is_leaf[parent_t[1:]] = False
        levels = [torch.nonzero(depth_t == d).squeeze(-1) for d in range(int(depth_t.max()) + 1)]
        return cls(
            parent=parent_t,
            symbol=torch.tensor(symbol, dtype=torch.long),
            depth=depth_t,
            levels=levels,
            is_leaf=is_leaf,
            word_end=torch.tensor(word_end, dtype=torch.long),
        )

    @property
    def num_nodes(self) -> int:
        return self.parent.numel()

    @property
    def max_depth(self) -> int:
        """Length of the longest sequence."""
        return len(self.levels) - 1

    def to(self, device: torch.device | str) -> PrefixTree:
        return PrefixTree(
            parent=self.parent.to(device),
            symbol=self.symbol.to(device),
            depth=self.depth.to(device),
            levels=[level.to(device) for level in self.levels],
            is_leaf=self.is_leaf.to(device),
            word_end=self.word_end.to(device),
        )

    def sequence(self, node: int) -> list[int]:
        """The prefix that ``node`` stands for, as ids (for checks and debugging)."""
        out = []
        while node > 0:
            out.append(int(self.symbol[node]))
            node = int(self.parent[node])
        return out[::-1]
