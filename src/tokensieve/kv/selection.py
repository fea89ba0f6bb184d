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

from tokensieve.kv.attention import register, sdpa_rows
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


def _shared_gathered_attention(query, key, value, mask, scaling, keep, count):
    """`gathered_attention` when every head keeps the same keys: each KV head's chosen
    rows are gathered once and read by its group of query heads."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    chosen = keep[:, 0, 0].to(torch.int8).topk(count, dim=-1, sorted=False).indices
    chosen = chosen.sort(dim=-1).values  # [b, count]
    index = chosen[:, None, :, None].expand(batch, kv_heads, count, dim)
    picked_keys, picked_values = key.gather(2, index), value.gather(2, index)
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    logits = torch.matmul(grouped, picked_keys.transpose(2, 3)) * scaling  # [b, kv, g, k]
    if mask is not None:
        row = mask[:, 0, -1, :].gather(-1, chosen)[:, None, None, :]  # [b, 1, 1, count]
        logits = logits.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else (
            logits + row)  # fmt: skip
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, picked_values).view(batch, heads, 1, dim)


def per_head_logits(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``q_h·k`` for every query head and cached key, ``[b, heads, 1, keys]``, computed
    per KV head (query head h uses KV head h // group) without copying the cache."""
    batch, heads, rows, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, (heads // kv_heads) * rows, dim)
    return torch.matmul(grouped, key.transpose(2, 3)).view(batch, heads, rows, -1)


def selective_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """SDPA for multi-query forwards (prefill is full); at single-query steps, attention
    over the selected keys only, gathered, so a step's cost follows the budget."""
    if query.shape[2] > 1:
        return sdpa_rows(query, key, value, attention_mask, scaling).transpose(1, 2), None
    cache = getattr(module, "_tokensieve_cache", None)
    keep = None if cache is None else cache.policy.select(module, query, key, cache)
    if keep is None:
        output = sdpa_rows(query, key, value, attention_mask, scaling)
    else:
        output = gathered_attention(query, key, value, attention_mask, scaling, keep)
    return output.transpose(1, 2).contiguous(), None


def gathered_attention(query, key, value, mask, scaling, keep) -> torch.Tensor:
    """One query row per head attending to its selected keys only: ``[b, heads, 1, d]``.

    `keep` ``[b, heads, 1, keys]`` marks the same number of keys for every head (both
    selection policies choose a fixed count). Only those keys and values are gathered,
    from their KV head (query head h reads KV head h // group, as transformers' grouping),
    without copying the cache per query head.
    """
    batch, heads, _, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    count = int(keep[0, 0, 0].sum())
    if keep.stride(1) == 0:  # one choice for every head (TokenSelect): gather per KV head
        return _shared_gathered_attention(query, key, value, mask, scaling, keep, count)
    # positions of the kept keys per head, in order: the largest `count` of a 0/1 row
    chosen = keep[:, :, 0].to(torch.int8).topk(count, dim=-1, sorted=False).indices
    chosen = chosen.sort(dim=-1).values  # [b, heads, count]
    kv_of_head = torch.arange(heads, device=query.device) // (heads // kv_heads)
    flat = (kv_of_head[None, :, None] * keys + chosen).reshape(batch, heads * count)
    index = flat[..., None].expand(-1, -1, dim)
    picked_keys = key.reshape(batch, kv_heads * keys, dim).gather(1, index)
    picked_values = value.reshape(batch, kv_heads * keys, dim).gather(1, index)
    picked_keys = picked_keys.view(batch, heads, count, dim)
    picked_values = picked_values.view(batch, heads, count, dim)
    logits = torch.matmul(query, picked_keys.transpose(2, 3)) * scaling  # [b, heads, 1, k]
    if mask is not None:
        rows = mask[:, :, -1:, :].expand(batch, heads, 1, keys)
        picked_mask = rows.gather(-1, chosen[:, :, None, :])
        if picked_mask.dtype == torch.bool:
            logits = logits.masked_fill(~picked_mask, float("-inf"))
        else:
            logits = logits + picked_mask
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, picked_values)


register(IMPLEMENTATION, selective_attention)
