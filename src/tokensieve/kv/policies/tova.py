"""TOVA (Oren et al., 2024): keep the tokens the newest query attends to most.

Score = attention of the last query only, averaged over all heads (one score per
token, shared by every KV head), recomputed at each forward; the newest token is
always kept. Like the paper, eviction runs at every step (kvpress evicts once).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensieve.kv.policy import KVPolicy


@dataclass
class TOVAPolicy(KVPolicy):
    recent: float | int = 1
    name = "tova"
    query_rows = 1

    def score(self, scores, seen):
        current = seen.attention[:, :, -1, :].float().mean(dim=1)  # [batch, keys]
        return current[:, None, :].expand_as(scores).clone()
