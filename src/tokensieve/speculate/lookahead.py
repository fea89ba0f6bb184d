"""Lookahead Decoding (Fu, Bailis, Stoica, Zhang, "Break the Sequential Dependency of LLM
Inference Using Lookahead Decoding", arXiv 2402.02057, ICML 2024).

Greedy decoding is a fixed point of Jacobi iteration: guess W future tokens, let one
forward predict each from the guesses before it, repeat. Lookahead Decoding keeps the last
N−1 iterations as a 2D window and, in the same forward that verifies drafts, runs one more
iteration (the *lookahead branch*, read as side tokens that nothing else sees). Each
window column then yields an n-gram — a token, the later iterations' tokens in its column
and the new prediction — kept in a pool keyed by its first token (at most G per key,
oldest out first, a repeated n-gram refreshed). The *verification branch* is the pool's
n-grams that start with the last committed token, verified as one tree.

The window, the mask and the pool follow the authors' code (hao-ai-lab/LookaheadDecoding,
`lade/decoding.py` ``jacobi_greedy_search_multilevel`` and `lade/models/modeling_llama.py`
at eed010da, the repository's mask figure = the paper's Fig. 2b):
- window cell (level l, column j) sits at position ``p + l + j`` (p = the root's); it
  sees level 0 up to its column (level 0 is a causal chain starting at the root) and its
  own column at levels 1…l;
- level 0 starts as W+N−3 tokens drawn from the prompt (seeded); N−2 warm-up steps each
  drop every level's first token and add a level from the newest level's predictions;
  after that each step drops level 0, shifts the levels down and adds the predictions as
  the newest level, however many tokens were accepted (the authors' ALWAYS_FWD_ONE);
- the pool is filled from the window only (the authors' default; `pool_from_prompt=True`
  also adds the prompt's n-grams, their POOL_FROM_PROMPT).
Where the code departs from the paper we follow the paper: a fully matching n-gram commits
all N−1 of its tokens and the bonus (the code drops the bonus, its issue #56), and the
verification starts at once rather than after the warm-up (an empty pool drafts nothing).
Verification n-grams sharing a prefix are merged into one tree (the same tokens are
accepted; fewer query tokens).
"""

from __future__ import annotations

import random

import torch

from tokensieve.errors import UserError
from tokensieve.speculate.tree import Draft, Side


class LookaheadDecoding:
    """`level` = N (n-gram size, ≥ 3), `window` = W (columns), `guesses` = G (n-grams per
    key verified per step). `tree_size` bounds the verification tree's nodes."""

    name = "lookahead"
    prompt_logits = 0

    def __init__(self, tree_size: int = 16, level: int = 3, window: int = 4, guesses: int = 8,
                 pool_from_prompt: bool = False, seed: int = 0):  # fmt: skip
        if level < 3:
            raise UserError(f"`level` (the n-gram size N) must be at least 3, got {level}")
        if window < 1 or guesses < 1 or tree_size < 1:
            raise UserError("`window`, `guesses` and `tree_size` must be at least 1")
        self.n, self.w, self.g, self.tree_size = level, window, guesses, tree_size
        self.pool_from_prompt, self.seed = pool_from_prompt, seed
        # bounds for the context check: no level is longer than level 0's first W+N-3
        # tokens, and no window cell sits deeper than W+N-3 (nor a guess than N-1)
        self.max_nodes = tree_size + (level - 1) * (window + level - 3)
        self.max_depth = max(level - 1, window + level - 3)
        self.pool: dict[int, list[tuple[int, ...]]] = {}
        self.levels: list[list[int]] = []
        self._sent: Draft | None = None

    # -- the pool ----------------------------------------------------------------------
    def _remember(self, ngram: tuple[int, ...]) -> None:
        key, rest = ngram[0], ngram[1:]
        bucket = self.pool.setdefault(key, [])
        if rest in bucket:
            bucket.remove(rest)
        elif len(bucket) >= self.g:
            bucket.pop(0)
        bucket.append(rest)

    def start(self, prompt_ids: list[int], prompt_logits) -> None:
        rng = random.Random(self.seed)
        self.levels = [[rng.choice(prompt_ids) for _ in range(self.w + self.n - 3)]]
        self.pool = {}
        if self.pool_from_prompt:
            for i in range(len(prompt_ids) - self.n + 1):
                self._remember(tuple(prompt_ids[i : i + self.n]))

    # -- one step ----------------------------------------------------------------------
    def draft(self, context: list[int]) -> Draft:
        root = context[-1]
        tokens, parents = [root], [-1]
        children: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        for guess in reversed(self.pool.get(root, [])):  # newest first
            node = 0
            for token in guess:
                child = children.get((node, token))
                if child is None:
                    if len(tokens) > self.tree_size:
                        break
                    child = children[(node, token)] = len(tokens)
                    tokens.append(token)
                    parents.append(node)
                node = child
        self._sent = Draft(tokens, parents, self._side(root))
        return self._sent

    def _side(self, root: int) -> Side:
        """The window as side tokens: level 0 after the root, then levels 1, 2, ..."""
        cells = [(0, j + 1) for j in range(len(self.levels[0]))]
        for level in range(1, len(self.levels)):
            cells += [(level, j) for j in range(len(self.levels[level]))]
        index = {cell: i for i, cell in enumerate(cells)}
        sees = torch.zeros(len(cells), 1 + len(cells), dtype=torch.bool)
        for i, (level, column) in enumerate(cells):
            sees[i, 0] = True  # the root is level 0, column 0
            for j in range(1, column + 1):  # level 0 up to this column
                if (0, j) in index:
                    sees[i, 1 + index[(0, j)]] = True
            for above in range(1, level + 1):  # this column at levels 1..level
                if (above, column) in index:
                    sees[i, 1 + index[(above, column)]] = True
        # level 0's column 0 is the root, so its stored tokens start at column 1
        tokens = [self.levels[level][column - (level == 0)] for level, column in cells]
        offsets = [level + column for level, column in cells]
        return Side(tokens, offsets, sees)

    def observe(self, draft: Draft, logits: torch.Tensor) -> None:
        """Read the newest level's predictions; harvest n-grams once the window is full;
        move the window one level on."""
        if draft is not self._sent:  # e.g. replayed by a caller: nothing to learn from
            return
        n_tree, top = len(draft.tokens), len(self.levels) - 1
        predictions = logits.argmax(-1).tolist()
        # level 0 as the window holds it: the root is its column 0
        first_column = [draft.tokens[0]] + self.levels[0]
        if top == 0:  # the newest level is level 0: the root's row, then its side rows
            newest = [predictions[0]] + predictions[n_tree : n_tree + len(self.levels[0])]
        else:
            start = n_tree + len(self.levels[0]) + sum(len(x) for x in self.levels[1:top])
            newest = predictions[start : start + len(self.levels[top])]
        if len(self.levels) < self.n - 1:  # warm-up: every level drops its first token
            self.levels = [level[1:] for level in self.levels] + [newest[1:]]
            return
        for j in range(self.w):  # one n-gram per column: its level-0 token, then upwards
            column = [first_column[j]] + [self.levels[level][j] for level in range(1, top + 1)]
            self._remember(tuple(column + [newest[j]]))
        self.levels = [self.levels[1][1:], *self.levels[2:], newest]
