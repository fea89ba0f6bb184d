"""Token Recycling (Luo et al., "Turning Trash into Treasure", arXiv 2408.08696, ACL 2025).

Every forward scores the whole vocabulary and keeps one token; the runners-up are
candidates the model may want again. An adjacency matrix ``M[vocab, k]`` stores, for each
token, the top-k tokens the model most recently ranked highest right after it. A step
fills a static tree template from ``M`` breadth-first (node ``(0, 1)`` takes the rank-1
successor of the rank-0 successor of the root; the paper's Fig. 2, and "Algorithm 1" as
smpanaro/token-recycling's code comments name it),
the tree is verified in one forward, and then **every** node's row — rejected nodes
included, that is the recycling — is overwritten with the top-k of that node's logits.

Choices, with their sources:
- Template: the authors' 80-node "2.2.2" tree (`tree.PAPER_TREE_CHILDREN`) when
  ``tree_size=80``; smaller trees keep its highest-scoring nodes (ours: on a CPU every node
  costs time; the benchmark finds the size that pays).
- Hot start, as the authors run it (one matrix for the whole run, "inherited from the
  previous query", Fig. 2); `reset()` forgets it. Rows of the prompt's tokens are also
  seeded from the prefill logits (smpanaro/token-recycling's default; the authors prefill
  without keeping logits), which costs little: the last 512 prompt positions only, so a
  long prompt's logits never fill memory.
- Rows never written hold -1 and their nodes are dropped with their subtrees before the
  forward (the authors' zero rows draft token 0 instead; on a CPU a useless node is time).
- When one token sits at several nodes, the last node in breadth-first order writes its
  row (PyTorch leaves duplicate index writes undefined; this keeps runs reproducible).
"""

from __future__ import annotations

import torch

from tokensieve.errors import UserError
from tokensieve.speculate.tree import Draft, Template, paper_template, pruned_template

UNSET = -1


class TokenRecycling:
    """The adjacency-matrix drafter. `tree_size` = draft nodes of the template (1-80; the
    default 2 paid best on a 2-core CPU, `make bench-speculate`; 80 is the authors' tree),
    `top_k` = candidates kept per token (the paper's 8; the template's ranks stay below)."""

    name = "recycling"
    prompt_logits = 512

    def __init__(self, tree_size: int = 2, top_k: int = 8, hot_start: bool = True):
        full = len(paper_template())
        if not 1 <= tree_size <= full:
            raise UserError(f"`tree_size` must be 1 to {full} (the authors' tree), got {tree_size}")
        self.template = Template.from_paths(pruned_template(tree_size))
        needed = max(self.template.ranks) + 1
        if top_k < needed:
            raise UserError(f"`top_k` must be at least {needed} for this tree, got {top_k}")
        self.top_k, self.hot_start = top_k, hot_start
        self.max_nodes, self.max_depth = self.template.nodes, self.template.depth
        self.matrix: torch.Tensor | None = None  # [vocab, top_k] long, on the CPU

    def reset(self) -> None:
        self.matrix = None

    def start(self, prompt_ids: list[int], prompt_logits: torch.Tensor) -> None:
        vocab = prompt_logits.shape[-1]
        if self.matrix is None or not self.hot_start or self.matrix.shape[0] != vocab:
            self.matrix = torch.full((vocab, self.top_k), UNSET, dtype=torch.long)
        self._update(prompt_ids[len(prompt_ids) - len(prompt_logits) :], prompt_logits)

    def draft(self, context: list[int]) -> Draft:
        """The template filled from the matrix, nodes without a candidate pruned."""
        assert self.matrix is not None, "start() first"
        rows = self.matrix
        tokens, parents, index = [context[-1]], [-1], {0: 0}  # template node -> draft node
        template = self.template
        for node in range(1, len(template.parents)):
            parent = index.get(template.parents[node])
            if parent is None:  # its parent was pruned
                continue
            token = int(rows[tokens[parent], template.ranks[node]])
            if token == UNSET:
                continue
            index[node] = len(tokens)
            tokens.append(token)
            parents.append(parent)
        return Draft(tokens, parents)

    def observe(self, draft: Draft, logits: torch.Tensor) -> None:
        self._update(draft.tokens, logits)

    def _update(self, tokens: list[int], logits: torch.Tensor) -> None:
        """Row of each token := top-k of its logits; the last occurrence wins."""
        last = {token: i for i, token in enumerate(tokens)}
        rows = torch.tensor(list(last.values()), device=logits.device)
        best = logits.index_select(0, rows).topk(self.top_k, dim=-1).indices.cpu()
        self.matrix[torch.tensor(list(last.keys()))] = best
