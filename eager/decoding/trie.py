"""Constrained beam search over the exact prefix trie of valid item codes.

The trie is a dense tensor ``next_node[node, value]`` (−1 = no such child), so the allowed set of
any prefix is one row lookup and every finished beam is a real item. Decoding uses Hugging Face
``generate`` with an explicit generation config (no sampling, top-k or other model defaults leak
in). It is the reference the serving engine (:mod:`eager.decoding.engine`) is checked and benchmarked
against: the authors' way, a Python ``prefix_allowed_tokens_fn`` called per beam and step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from eager.index.item_index import ItemIndex
from eager.model.code_tokens import CodeVocabulary


class CodeTrie:
    def __init__(self, index: ItemIndex, vocab: CodeVocabulary):
        self.index, self.vocab, self.levels = index, vocab, index.levels
        nodes: dict[tuple[int, ...], int] = {(): 0}
        edges: list[tuple[int, int, int]] = []
        for row in index.codes.tolist():
            for depth in range(self.levels):
                prefix, child = tuple(row[:depth]), tuple(row[: depth + 1])
                if child not in nodes:
                    nodes[child] = len(nodes)
                    edges.append((nodes[prefix], row[depth], nodes[child]))
        self.next_node = torch.full((len(nodes), index.k), -1, dtype=torch.int32)
        for parent, value, child in edges:
            self.next_node[parent, value] = child
        self.depth_of = torch.zeros(len(nodes), dtype=torch.long)
        for prefix, node in nodes.items():
            self.depth_of[node] = len(prefix)
        # Leaf node → row of its item in the index (−1 for inner nodes): finished beams map to items
        # with one lookup.
        self.item_of_node = torch.full((len(nodes),), -1, dtype=torch.long)
        for row, code in enumerate(index.codes.tolist()):
            self.item_of_node[nodes[tuple(code)]] = row
        # Item row → the nodes on its path below the root (one per level), and node → how many items
        # lie under it: a node whose items are all excluded for a user is a dead end for that user.
        self.path_nodes = torch.tensor([[nodes[tuple(code[: depth + 1])] for depth in range(self.levels)]
                                        for code in index.codes.tolist()], dtype=torch.long).view(-1, self.levels)
        self.items_under = torch.bincount(self.path_nodes.flatten(), minlength=len(nodes))
        # token id → code value, for walking the trie from generated ids
        self.value_of_token = {int(t): int(v) for level in range(self.levels)
                               for v, t in enumerate(vocab.table[level].tolist()) if t >= 0}

    def allowed_values(self, node: int) -> torch.Tensor:
        return torch.nonzero(self.next_node[node] >= 0).squeeze(1)

    def allowed_token_ids(self, generated: Sequence[int]) -> list[int]:
        node = 0
        for token in generated:
            value = self.value_of_token.get(int(token))
            node = int(self.next_node[node, value]) if value is not None else -1
            if node < 0:
                return []
        depth = int(self.depth_of[node])
        if depth >= self.levels:
            return []
        return self.vocab.table[depth, self.allowed_values(node)].tolist()


@dataclass
class Recommendation:
    key: str
    code: str
    score: float  # sum of the code tokens' log-probabilities


