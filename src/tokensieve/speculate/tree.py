"""Draft trees: which guessed tokens one verification forward reads, and who sees whom.

A draft is a small tree of token guesses rooted at the last committed token. It is
flattened in an order where every parent comes before its children ("the merged
sequence" of Token Recycling, Luo et al. 2024, Fig. 2); node 0 is the root. Each node
sees the committed text, its ancestors and itself — nothing of its siblings — so one
forward gives every path the logits that decoding that path token by token would give.

Token Recycling fills a *static template*: a fixed tree of rank paths, ``(0, 1)`` meaning
"the 2nd candidate successor of the 1st candidate successor of the root".
`PAPER_TREE_CHILDREN` (`paper_template()`) is the authors' default template ("2.2.2": 80
nodes, depth 6; `model/recycling/tree_template_.py` of Luowaterbi/TokenRecycling, the
same tree as smpanaro/token-recycling's ``static_tree``, written here as children counts
per parent). A CPU pays for
every node (a forward of 81 tokens costs several single-token forwards), so smaller
trees are offered: `pruned_template` keeps the nodes with the highest product of assumed
per-rank acceptance rates, which always yields a valid tree (a child never outscores its
parent). That pruning is ours, not the paper's; the benchmark measures which size pays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

# Children counts per parent, parents in breadth-first order, depth 1 to 6; a parent's
# children take ranks 0, 1, ... in order. 8 / 21 / 25 / 15 / 8 / 3 nodes per depth.
PAPER_TREE_CHILDREN = (
    (8,),
    (8, 4, 3, 2, 1, 1, 1, 1),
    (8, 3, 2, 1, 1, 1, 1, 1, 2, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0),
    (5, 2, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0),
    (3, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0),
    (2, 0, 0, 1, 0, 0, 0, 0),
)
# Assumed chance that the model's next token is its candidate of rank r (ranks 0..7):
# only used to order nodes when pruning the template.
RANK_ACCEPTANCE = (0.6, 0.15, 0.07, 0.04, 0.03, 0.02, 0.015, 0.01)


@cache
def paper_template() -> tuple[tuple[int, ...], ...]:
    """The authors' 80-node template as rank paths in breadth-first order."""
    paths: list[tuple[int, ...]] = []
    parents: list[tuple[int, ...]] = [()]
    for counts in PAPER_TREE_CHILDREN:
        assert len(counts) == len(parents), "one count per parent of the previous depth"
        pairs = zip(parents, counts, strict=True)
        level = [(*parent, rank) for parent, n in pairs for rank in range(n)]
        paths.extend(level)
        parents = level
    return tuple(paths)


def path_score(path: tuple[int, ...]) -> float:
    score = 1.0
    for rank in path:
        score *= RANK_ACCEPTANCE[rank]
    return score


@cache
def pruned_template(nodes: int) -> tuple[tuple[int, ...], ...]:
    """The `nodes` paths of the authors' template with the highest `path_score`, kept in
    breadth-first order (ties broken by that order, so the result is deterministic)."""
    full = paper_template()
    if not 0 <= nodes <= len(full):
        raise ValueError(f"a template has 0 to {len(full)} nodes, not {nodes}")
    order = sorted(range(len(full)), key=lambda i: (-path_score(full[i]), i))
    keep = sorted(order[:nodes])
    return tuple(full[i] for i in keep)


@dataclass(frozen=True)
class Template:
    """A static tree compiled once: ``parents[i]`` (-1 for the root, node 0), the rank each
    node takes from its parent's candidates, and its depth (root 0)."""

    parents: tuple[int, ...]
    ranks: tuple[int, ...]
    depths: tuple[int, ...]

    @classmethod
    def from_paths(cls, paths) -> Template:
        index = {(): 0}
        parents, ranks, depths = [-1], [0], [0]
        for path in sorted(paths, key=lambda p: (len(p), p)):
            path = tuple(path)
            if path[:-1] not in index:
                raise ValueError(f"rank path {path} has no parent in the template")
            index[path] = len(parents)
            parents.append(index[path[:-1]])
            ranks.append(path[-1])
            depths.append(len(path))
        return cls(tuple(parents), tuple(ranks), tuple(depths))

    @property
    def nodes(self) -> int:
        """Draft nodes, the root excluded."""
        return len(self.parents) - 1

    @property
    def depth(self) -> int:
        return max(self.depths)


@dataclass
class Side:
    """Tokens a drafter reads in the same forward for its own use, never accepted
    (Lookahead Decoding's lookahead branch): each at position ``past + offsets[i]``;
    ``sees[i]`` (bool, ``[len(tokens), 1 + len(tokens)]``) says what it may look at: the
    root (column 0), then the side tokens. The tree never sees side tokens."""

    tokens: list[int]
    offsets: list[int]
    sees: torch.Tensor


@dataclass
class Draft:
    """Guessed tokens to verify in one forward: ``tokens[0]`` is the root (the last
    committed token, not yet in the cache); ``parents[i] < i`` for every other node.
    `side` holds tokens read after the tree for the drafter alone (usually none)."""

    tokens: list[int]
    parents: list[int]
    side: Side | None = None

    def __post_init__(self):
        if len(self.tokens) != len(self.parents) or not self.tokens or self.parents[0] != -1:
            raise ValueError("a draft needs a root (parent -1) and one parent per token")
        if any(not 0 <= p < i for i, p in enumerate(self.parents) if i):
            raise ValueError("every parent must come before its child")

    @property
    def query_tokens(self) -> int:
        """Tokens the verification forward reads: the tree, then the side tokens."""
        return len(self.tokens) + (len(self.side.tokens) if self.side else 0)

    @classmethod
    def chain(cls, root: int, guesses: list[int]) -> Draft:
        """A single branch: root, then each guess under the previous one."""
        return cls([root, *guesses], list(range(-1, len(guesses))))

    def __len__(self) -> int:
        return len(self.tokens)

    def depths(self) -> list[int]:
        depths = [0] * len(self.parents)
        for i in range(1, len(self.parents)):
            depths[i] = depths[self.parents[i]] + 1
        return depths

    def ancestors(self) -> torch.Tensor:
        """``[n, n]`` bool: ``[i, j]`` is True iff node j is node i or one of its ancestors."""
        n = len(self.parents)
        mask = torch.zeros(n, n, dtype=torch.bool)
        mask[0, 0] = True
        for i in range(1, n):
            mask[i] = mask[self.parents[i]]
            mask[i, i] = True
        return mask


def attention_mask(draft: Draft, past: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The additive 4D mask ``[1, 1, q, past + q]`` of a draft read after `past` cached
    tokens (q = `draft.query_tokens`): 0 where a token may look (every cached token; in
    the tree its ancestors and itself; side tokens what `side.sees` allows), the dtype's
    most negative value elsewhere. Additive, never boolean: eager attention adds the mask
    to the scores, so a boolean one would hide nothing."""
    n = len(draft)
    q = draft.query_tokens
    hidden = torch.finfo(dtype).min
    tree = torch.zeros(q, q, dtype=torch.bool)
    tree[:n, :n] = draft.ancestors()
    if draft.side is not None:
        tree[n:, 0] = draft.side.sees[:, 0]
        tree[n:, n:] = draft.side.sees[:, 1:]
    mask = torch.zeros(1, 1, q, past + q, dtype=dtype, device=device)
    tree = tree.to(device)
    visible = torch.zeros((), dtype=dtype, device=device)
    mask[0, 0, :, past:] = torch.where(tree, visible, torch.full_like(visible, hidden))
    return mask


def accepted_path(draft: Draft, expected) -> list[int]:
    """The longest path down from the root whose every token is what the model (or the
    text being followed) puts next: node indices, root first. `expected[node]` is the
    token that must follow the path ending at `node` (the model's argmax there). Siblings
    hold distinct tokens in every drafter here; were two equal, the first is taken (their
    futures are the same)."""
    children: dict[int, list[int]] = {}
    for i, parent in enumerate(draft.parents[1:], start=1):
        children.setdefault(parent, []).append(i)
    path = [0]
    while True:
        want = expected[path[-1]]
        match = next((c for c in children.get(path[-1], ()) if draft.tokens[c] == want), None)
        if match is None:
            return path
        path.append(match)
