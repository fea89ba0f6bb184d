"""H2O (Zhang et al., NeurIPS 2023): heavy hitters by accumulated attention + recent window.

Score of a slot = the attention it received, summed over every query of every forward
so far (prefill and each decode step; no normalisation by the number of queries, so
early tokens are favoured, as in the paper). The paper's default splits the budget
into heavy hitters and recent tokens equally (10% + 10%), hence ``recent=0.5``.
With grouped-query attention, a KV head's score sums its query heads (the reference
code repeats KV to every query head, which cannot be evicted per KV head).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensieve.kv.policy import KVPolicy, per_kv_head


@dataclass
class H2OPolicy(KVPolicy):
    recent: float | int = 0.5
    name = "h2o"

    def score(self, scores, seen):
        grouped = per_kv_head(seen.attention.float(), seen.kv_heads)
        return scores + grouped.sum(dim=(2, 3))
