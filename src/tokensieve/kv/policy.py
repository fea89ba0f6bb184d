"""The KV policy protocol: a policy declares what it reads and when it compresses, and
returns scores; the cache keeps the top-scoring slots (eviction is the cache's).

An eviction policy (`KVPolicy`) declares:

- ``reads``: ``"attention"`` (weights of the forward's query rows, the last
  ``query_rows`` only when set), ``"logits"`` (the model's output over the tokens just
  read) or ``"nothing"``;
- ``compresses``: ``"every step"`` (after each forward), ``"prefill"`` (once, after
  the prompt), ``"per input"`` (after each multi-token input, e.g. a chat turn),
  ``"before input"`` (before each forward, making room for what it brings: the input
  and the policy's ``reserve`` of generated tokens);

and implements ``score(scores, seen) -> scores``: the slots' new scores
``[batch, kv_heads, slots]`` from their scores before this forward and what it showed
(`Seen`). A policy reading logits implements ``token_scores`` instead, one score per
token read, shared by every layer and head. State a policy needs across forwards is its
own: ``new_state()`` returns it (a typed object, one per cache), and the cache hands it
back. The cache owns the rest (the anchor for this shape is kvpress's `ScorerPress`):
the budget (a fraction of the prompt, fixed at prefill, or a token count), the
attention sinks (first slots) and the recent window (last slots) that are always kept,
grouped-query heads, and the choice of the top-scoring slots per KV head.

Key *selection* (nothing evicted; each decode step reads a few keys) is the smaller
protocol of `tokensieve.kv.selection.SelectionPolicy`; both share `Budget`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensieve.errors import UserError


def per_kv_head(attention: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[batch, heads, q, k]`` → ``[batch, kv_heads, group, q, k]`` (GQA grouping)."""
    batch, heads, queries, keys = attention.shape
    return attention.reshape(batch, kv_heads, heads // kv_heads, queries, keys)


@dataclass
class Budget:
    """How much a policy keeps. Fields:

    budget: a fraction of the prompt in (0, 1] as a float (fixed when the prompt is
        read) or a token count as an int ≥ 1 (so ``1`` keeps one token and ``1.0``
        everything; the command lines read "1" as the fraction); the cache never holds
        more slots per layer and head after a compression step.
    sink: first slots always kept (attention sinks).
    recent: last slots always kept; a float in (0, 1) is a fraction of the budget.
    """

    budget: float | int = 0.2
    sink: int = 0
    recent: float | int = 0

    name: ClassVar[str] = "policy"
    reads: ClassVar[str] = "nothing"  # what the cache hands the policy (see KVPolicy)
    compresses: ClassVar[str] = "every step"

    def __post_init__(self) -> None:
        budget = self.budget
        if isinstance(budget, bool) or not isinstance(budget, int | float):
            raise UserError(f"budget must be a number, got {budget!r}")
        if isinstance(budget, float) and not 0.0 < budget <= 1.0:
            raise UserError(f"a fractional budget must be in (0, 1], got {budget}")
        if isinstance(budget, int) and budget < 1:
            raise UserError(f"a token budget must be at least 1, got {budget}")
        if self.sink < 0 or self.recent < 0:
            raise UserError("sink and recent must not be negative")

    def resolve_budget(self, prompt_length: int) -> int:
        """Slots per layer and KV head for a prompt of `prompt_length` tokens."""
        if isinstance(self.budget, float):
            budget = max(1, math.floor(self.budget * prompt_length))
        else:
            budget = int(self.budget)
        if self.sink + self.recent_slots(budget) > budget:
            raise UserError(
                f"sink ({self.sink}) + recent window ({self.recent_slots(budget)}) exceed the "
                f"budget of {budget} tokens"
            )
        return budget

    def recent_slots(self, budget: int) -> int:
        if isinstance(self.recent, float) and self.recent < 1:
            return math.floor(self.recent * budget)
        return int(self.recent)

    def new_state(self) -> object | None:
        """The policy's own state for one cache (one stream of text), if it needs one."""
        return None


@dataclass
class Seen:
    """What one forward (or one chunk of its query rows) showed a layer's policy."""

    layer: int  # the layer's index
    step: int  # forwards this layer saw before this one (0: the prompt)
    kv_heads: int
    attention: torch.Tensor | None = None  # [batch, heads, rows, keys] when reads attention
    state: object | None = None  # the policy's own, from `new_state`


@dataclass
class KVPolicy(Budget):
    """An eviction policy (see the module docstring for the protocol)."""

    reads: ClassVar[str] = "attention"  # "attention" | "logits" | "nothing"
    query_rows: ClassVar[int | None] = None  # attention of the last rows only (None: all)
    # True when `score` depends on the order of the slots (noise drawn per slot, pooling
    # over neighbours): the cache then hands it attention and scores in position order
    ordered: ClassVar[bool] = False

    def score(self, scores: torch.Tensor, seen: Seen) -> torch.Tensor:
        """The slots' scores after this forward, from `scores` before it. Long forwards
        arrive in consecutive chunks of query rows, so a score must add up over chunks.
        Default: unchanged."""
        return scores

    def token_scores(self, state, input_ids: torch.Tensor, logits: torch.Tensor):
        """``[batch, new]`` scores of the tokens just read (policies reading logits)."""
        raise NotImplementedError(f"{self.name} reads logits but scores no tokens")

    def rank(self, scores: torch.Tensor) -> torch.Tensor:
        """The scores slots are ranked by when the cache evicts (default: `scores`)."""
        return scores
