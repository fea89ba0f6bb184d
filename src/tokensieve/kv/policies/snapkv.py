"""SnapKV (Li et al., 2024), as kvpress implements it: compress the prompt once.

The last `window` prompt queries vote: their attention to the earlier keys (the prefix
before the window), averaged over the window, smoothed by a 1-D average pool (kernel 5)
over the prefix only, as kvpress's SnapKVPress and the authors' code do (the window's
own keys never enter the pool, so they cannot raise their neighbours' scores), averaged
over the query heads of each KV head. The window itself is always kept. Prefill only:
tokens generated afterwards are all kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokensieve.kv.policy import KVPolicy, per_kv_head


@dataclass
class SnapKVPolicy(KVPolicy):
    window: int = 64
    kernel: int = 5
    name = "snapkv"
    ordered = True  # pools over neighbouring positions
    compresses = "prefill"

    @property
    def query_rows(self) -> int:
        return self.window

    def recent_slots(self, budget: int) -> int:
        return min(self.window, budget)

    def score(self, scores, seen):
        attention = seen.attention
        keys = attention.shape[-1]
        window = min(self.window, attention.shape[2], keys)
        prefix = keys - window
        votes = attention[:, :, -window:, :prefix].float().mean(dim=2)  # [batch, heads, prefix]
        pooled = torch.zeros(*votes.shape[:2], keys, device=votes.device)
        if prefix:  # the window's own slots stay 0: they are kept as the recent window
            pooled[..., :prefix] = torch.nn.functional.avg_pool1d(
                votes, kernel_size=self.kernel, padding=self.kernel // 2, stride=1
            )[..., :prefix]
        grouped = per_kv_head(pooled[:, :, None, :], seen.kv_heads)
        return grouped.mean(dim=(2, 3))
