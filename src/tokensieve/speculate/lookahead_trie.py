"""Lookahead (Zhao et al., Ant Group, "Lookahead: An Inference Acceleration Framework for
Large Language Model with Lossless Generation Accuracy", arXiv 2312.12728, KDD 2024).

Drafts come from a trie of token sequences seen before: every position of the prompt
("input mode") and of the outputs ("output mode", kept across requests) inserts the
`branch_length` tokens that follow it, with a count per trie node. At each step the
longest suffix of the context (up to `match_length` tokens, ending at the last committed
token) is looked up, and the subtree below it gives a *multi-branch* draft: its nodes are
taken most frequent first until `tree_size` nodes (the paper's decoding length), so likely
branches are kept whole (the paper's "hierarchical multi-branch draft"). The shared
verifier keeps the longest correct branch ("Verification and Accept").

This is the Lookahead of the seed papers (`shared/papers`); Fu et al.'s "Lookahead
Decoding" (n-grams harvested from Jacobi iterations run beside verification) is a
different method, `tokensieve.speculate.lookahead` (``--method lookahead``). Departures
from the authors' code (alipay/PainlessInferenceAcceleration, `lookahead_cache.py`): one
trie for prompts and outputs instead of two, and a node budget that clears the trie when
exceeded instead of pruning the least frequent nodes.
"""

from __future__ import annotations

import heapq

from tokensieve.errors import UserError
from tokensieve.speculate.tree import Draft


class _Node:
    __slots__ = ("count", "children")

    def __init__(self):
        self.count = 0
        self.children: dict[int, _Node] = {}


class LookaheadTrie:
    """`tree_size` is the paper's decoding length (draft nodes per step), `branch_length`
    the longest branch, `match_length` the longest context suffix looked up."""

    name = "lookahead-trie"
    prompt_logits = 0  # learns nothing from logits

    def __init__(self, tree_size: int = 16, branch_length: int = 8, match_length: int = 4,
                 hot_start: bool = True, max_trie_nodes: int = 2_000_000):  # fmt: skip
        if min(tree_size, branch_length, match_length) < 1:
            raise UserError("`tree_size`, `branch_length` and `match_length` must be at least 1")
        self.decoding_length, self.branch_length = tree_size, branch_length
        self.match_length, self.hot_start = match_length, hot_start
        self.max_trie_nodes = max_trie_nodes
        self.max_nodes, self.max_depth = tree_size, branch_length
        self.reset()

    def reset(self) -> None:
        self.root, self.nodes = _Node(), 0
        self._open: list[tuple[int, _Node]] = []  # (tokens inserted, deepest node) per start
        self._seen = 0  # tokens of the current text already inserted

    # -- the trie --------------------------------------------------------------------
    def _extend(self, text: list[int]) -> None:
        """Insert the windows that tokens ``text[self._seen:]`` add to: each position's
        window is `match_length` + `branch_length` tokens long and counted once."""
        window = self.match_length + self.branch_length
        for position in range(self._seen, len(text)):
            self._open.append((0, self.root))
            still_open = []
            for inserted, node in self._open:
                child = node.children.get(text[position])
                if child is None:
                    child = node.children[text[position]] = _Node()
                    self.nodes += 1
                child.count += 1
                if inserted + 1 < window:
                    still_open.append((inserted + 1, child))
            self._open = still_open
        self._seen = len(text)
        if self.nodes > self.max_trie_nodes:
            self.reset()
            self._seen = len(text)

    def start(self, prompt_ids: list[int], prompt_logits) -> None:
        if not self.hot_start:
            self.reset()
        self._open, self._seen = [], 0  # a new text: windows never straddle two requests
        self._extend(prompt_ids)

    def draft(self, context: list[int]) -> Draft:
        self._extend(context)
        for size in range(min(self.match_length, len(context)), 0, -1):
            node = self.root
            for token in context[len(context) - size :]:
                node = node.children.get(token)
                if node is None:
                    break
            if node is not None and node.children:
                return self._branches(context[-1], node)
        return Draft.chain(context[-1], [])

    def _branches(self, root_token: int, matched: _Node) -> Draft:
        """Up to `decoding_length` nodes below `matched`, most frequent first (a parent is
        always taken before its children, so the result is a tree)."""
        tokens, parents, depths = [root_token], [-1], [0]
        heap, order = [], 0
        for token, child in matched.children.items():
            heap.append((-child.count, order, token, child, 0))
            order += 1
        heapq.heapify(heap)
        while heap and len(tokens) <= self.decoding_length:
            _, _, token, node, parent = heapq.heappop(heap)
            tokens.append(token)
            parents.append(parent)
            depths.append(depths[parent] + 1)
            here = len(tokens) - 1
            if depths[here] < self.branch_length:
                for next_token, child in node.children.items():
                    heapq.heappush(heap, (-child.count, order, next_token, child, here))
                    order += 1
        return Draft(tokens, parents)

    def observe(self, draft, logits) -> None:
        pass  # outputs enter the trie through `draft`'s context at the next step
