"""Attention functions that let a policy see attention weights without the whole matrix.

Eager attention materialises ``[heads, n, n]`` weights per layer (2.4 GB for SmolLM2
at 8k tokens) only so that a policy can read them, and is several times slower than
SDPA on long prompts. ``tokensieve_scoring`` computes attention chunk by chunk of
query rows and hands each chunk's weights to the policy (`KVPolicy.observe` sums over
rows, so chunks add up); policies that read only the last rows (SnapKV's window,
TOVA's newest query) declare ``query_rows`` and the other rows run through SDPA
without weights. The result equals eager attention.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

SCORING = "tokensieve_scoring"
CHUNK = 512  # query rows per chunk: 75 MB of weights for 9 heads x 4k keys


def _expand(key: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Repeat KV heads to the query heads (grouped-query attention)."""
    return key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)


def eager_rows(query, key, value, mask, scaling, keep=None):
    """Eager attention for the given query rows: ``(output [b, h, q, d], weights)``.

    `mask` is the additive or boolean mask for these rows; `keep`, a boolean
    ``[b, h, q, keys]``, additionally hides keys (token selection).
    """
    logits = torch.matmul(query, _expand(key, query).transpose(2, 3)) * scaling
    if mask is not None:
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, _expand(value, query)), weights


def sdpa_rows(query, key, value, mask, scaling) -> torch.Tensor:
    """Attention output for the given query rows through SDPA (no weights)."""
    return torch.nn.functional.scaled_dot_product_attention(
        query, _expand(key, query), _expand(value, query), attn_mask=mask, scale=scaling
    )


def _rows(mask, start, stop):
    return None if mask is None else mask[:, :, start:stop]


def scoring_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """Attention whose weights go to the cache's policy chunk by chunk, never returned."""
    cache = module._tokensieve_cache
    rows = query.shape[2]
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
