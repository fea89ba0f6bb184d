"""`KVPolicy`: which cached positions matter. Policies score; the base class keeps.

A policy turns what one forward showed (attention weights ``[batch, heads, queries,
keys]``) into per-slot scores ``[batch, kv_heads, kept]`` (``observe``). The base
class owns everything else (the anchor for this shape is kvpress's `ScorerPress`):
the budget (a fraction of the prompt, fixed at prefill, or a token count), the
attention sinks (first slots) and the recent window (last slots) that are always
kept, grouped-query heads (a query head's weights count for its KV head), and the
choice of the top-scoring slots per KV head (``keep_indices``).
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
class KVPolicy:
    """Base policy. Fields:

    budget: a fraction of the prompt in (0, 1] (fixed when the prompt is read) or a
        token count (an int > 1); the cache never holds more slots per layer and head
        after a compression step.
    sink: first slots always kept (attention sinks).
    recent: last slots always kept; a float in (0, 1) is a fraction of the budget.
    """

    budget: float | int = 0.2
    sink: int = 0
    recent: float | int = 0

    name: ClassVar[str] = "policy"
    needs_attention: ClassVar[bool] = True
    needs_logits: ClassVar[bool] = False  # True: `after_forward` sees the model's logits
    # When the cache shrinks to the budget: "every step" (after each forward), "prefill"
    # (once, after the prompt), "per input" (after each multi-token input: SirLLM's
    # turns) or "never" (selection policies: every key stays, each step reads a few).
    compresses: ClassVar[str] = "every step"
    query_rows: ClassVar[int | None] = None  # observe only the last rows (None: all)

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

    def compress_after_attention(self, layer) -> bool:
        """Evict right after this layer's attention? (default: prefill, and every step
        for policies that compress every step)."""
        return layer.calls == 0 or self.every_step

    @property
    def every_step(self) -> bool:
        return self.compresses == "every step"

    def observes(self, layer) -> bool:
        """Does this forward's attention matter to the policy? (default: whenever it
        may compress); otherwise attention runs without weights (SDPA)."""
        return self.compress_after_attention(layer)

    def after_forward(self, cache, input_ids: torch.Tensor, logits: torch.Tensor) -> None:
        """Called with the model's output when ``needs_logits`` (default: nothing)."""

    def observe(self, layer, attention: torch.Tensor | None, layer_idx: int) -> None:
        """Update ``layer.scores`` from attention weights of this forward's query rows
        (default: nothing). Long forwards arrive in consecutive chunks of rows, the last
        ``query_rows`` only when set, so a score must add up over chunks."""

    def slot_scores(self, layer) -> torch.Tensor:
        """Scores used to rank slots now (default: the running ``layer.scores``)."""
        return layer.scores

    def keep_indices(self, layer, budget: int) -> torch.Tensor | None:
        """Sorted slots to keep ``[batch, kv_heads, budget]``, or None to keep all."""
        kept = layer.physical_length()
        if kept <= budget:
            return None
        scores = self.slot_scores(layer).clone().float()
        recent = self.recent_slots(budget)
        if self.sink:
            scores[..., : self.sink] = math.inf
        if recent:
            scores[..., kept - recent :] = math.inf
        indices = scores.topk(budget, dim=-1).indices
        return indices.sort(dim=-1).values
