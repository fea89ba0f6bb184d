"""Token *selection* without eviction: every key stays cached, each decode step attends
to a chosen few (TokenSelect, TidalDecode). Memory is not saved; attention work is.

The protocol is one method: ``select(module, query, key, cache)`` returns which keys
each query head may see at a decode step (or None: all), reading and updating the
policy's own state (``cache.policy_state``, from ``new_state``). A registered
transformers attention function (``tokensieve_selective``) runs SDPA on multi-token
forwards, and at decode steps (one query) asks the policy; the other keys get ``-inf``
logits. Prefill is full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensieve.kv.attention import eager_rows, register, sdpa_rows
from tokensieve.kv.policy import Budget

IMPLEMENTATION = "tokensieve_selective"


@dataclass
class SelectionPolicy(Budget):
    """Base for policies that select per step instead of evicting."""

    compresses: ClassVar[str] = "never"

    def select(self, module, query: torch.Tensor, key: torch.Tensor, cache) -> torch.Tensor | None:
        """Bool mask ``[batch, heads, 1, keys]`` of keys the query may attend to.

        Args: query ``[batch, heads, 1, dim]`` (after RoPE), key ``[batch, kv_heads,
        keys, dim]`` (cached, after RoPE).
        """
        raise NotImplementedError


def selective_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """SDPA for multi-query forwards (prefill is full); at single-query steps, eager
    attention restricted to the policy's selection."""
    if query.shape[2] > 1:
        return sdpa_rows(query, key, value, attention_mask, scaling).transpose(1, 2), None
    cache = getattr(module, "_tokensieve_cache", None)
    keep = None if cache is None else cache.policy.select(module, query, key, cache)
    output, weights = eager_rows(query, key, value, attention_mask, scaling, keep)
    return output.transpose(1, 2).contiguous(), weights


register(IMPLEMENTATION, selective_attention)
