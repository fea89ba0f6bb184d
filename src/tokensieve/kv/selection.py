"""Token *selection* without eviction: every key stays cached, each decode step attends
to a chosen few (TokenSelect, TidalDecode). Memory is not saved; attention work is.

A registered transformers attention function (``tokensieve_selective``) computes
attention like the eager one, and at decode steps (one query) asks the policy which
keys each query head may see; the others get ``-inf`` logits. Prefill is full.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from tokensieve.kv.policy import KVPolicy

IMPLEMENTATION = "tokensieve_selective"


class SelectionPolicy(KVPolicy):
    """Base for policies that select per step instead of evicting."""

    needs_attention = False
    selects = True

    def keep_indices(self, layer, budget):
        return None

    def select(self, module, query: torch.Tensor, key: torch.Tensor, cache) -> torch.Tensor | None:
        """Bool mask ``[batch, heads, 1, keys]`` of keys the query may attend to.

        Args: query ``[batch, heads, 1, dim]`` (after RoPE), key ``[batch, kv_heads,
        keys, dim]`` (cached, after RoPE).
        """
        raise NotImplementedError


def selective_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """Eager attention plus the policy's key selection at single-query steps."""
    groups = query.shape[1] // key.shape[1]
    keys = key.repeat_interleave(groups, dim=1)
    values = value.repeat_interleave(groups, dim=1)
    logits = torch.matmul(query, keys.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attention_mask, float("-inf"))
        else:
            logits = logits + attention_mask
    cache = getattr(module, "_tokensieve_cache", None)
    if cache is not None and query.shape[2] == 1:
        keep = cache.policy.select(module, query, key, cache)
        if keep is not None:
            logits = logits.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.matmul(weights, values).transpose(1, 2).contiguous()
    return output, weights


AttentionInterface.register(IMPLEMENTATION, selective_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, eager_mask)
