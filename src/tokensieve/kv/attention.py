"""Attention functions that let a policy see attention weights without the whole matrix.

Eager attention materialises ``[heads, n, n]`` weights per layer (2.4 GB for SmolLM2
at 8k tokens) only so that a policy can read them, and is several times slower than
SDPA on long prompts. ``tokensieve_scoring`` computes attention chunk by chunk of
query rows and hands each chunk's weights to the policy (`KVPolicy.score` adds up over
chunks of rows); policies that read only the last rows (SnapKV's window,
TOVA's newest query) declare ``query_rows`` and the other rows run through SDPA
without weights. The result equals eager attention.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

SCORING = "tokensieve_scoring"
CHUNK = 512  # query rows per chunk: 75 MB of weights for 9 heads x 4k keys


def eager_rows(query, key, value, mask, scaling, keep=None):
    """Eager attention for the given query rows: ``(output [b, h, q, d], weights)``.

    `mask` is the additive or boolean mask for these rows; `keep`, a boolean
    ``[b, h, q, keys]``, additionally hides keys (token selection). Grouped-query heads
    are computed per KV head without copying the cache (query head i uses KV head
    i // group, as transformers' ``repeat_kv``).
    """
    batch, heads, rows, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, (heads // kv_heads) * rows, dim)
    logits = torch.matmul(grouped, key.transpose(2, 3)).view(batch, heads, rows, -1) * scaling
    if mask is not None:
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.matmul(weights.view(batch, kv_heads, -1, weights.shape[-1]), value)
    return output.view(batch, heads, rows, dim), weights


def sdpa_rows(query, key, value, mask, scaling) -> torch.Tensor:
    """Attention output for the given query rows through SDPA (no weights)."""
    return torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )  # fmt: skip


def _rows(mask, start, stop):
    return None if mask is None else mask[:, :, start:stop]


def scoring_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """Attention whose weights go to the cache's policy chunk by chunk, never returned."""
    cache = module._tokensieve_cache
    rows = query.shape[2]
    if not cache.wants_attention(module.layer_idx):  # e.g. SnapKV after the prompt
        output = sdpa_rows(query, key, value, attention_mask, scaling)
        return output.transpose(1, 2).contiguous(), None
    wanted = cache.policy.query_rows
    first = 0 if wanted is None else max(rows - wanted, 0)
    outputs = []
    if first:
        mask = _rows(attention_mask, 0, first)
        outputs.append(sdpa_rows(query[:, :, :first], key, value, mask, scaling))
    for start in range(first, rows, CHUNK):
        stop = min(start + CHUNK, rows)
        mask = _rows(attention_mask, start, stop)
        output, weights = eager_rows(query[:, :, start:stop], key, value, mask, scaling)
        cache.observe(module.layer_idx, weights)
        outputs.append(output)
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register(name: str, function) -> None:
    """Register an attention function with transformers (masks built as for eager)."""
    AttentionInterface.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, eager_mask)


register(SCORING, scoring_attention)
