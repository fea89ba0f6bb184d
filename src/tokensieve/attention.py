"""One attention routine for everything that must see attention weights.

`inspect`'s attention-received signal sums each key's weights over heads and queries;
the KV policies that score with attention (H2O, Keyformer, TOVA, SnapKV) read the weights
of some query rows. Eager attention returns the whole ``[heads, n, n]`` matrix (2.4 GB per
layer for SmolLM2 at 8k tokens) and `output_attentions` keeps one per layer. Here the
query rows are attended in chunks: each chunk's logits, softmax and output are computed
once (one q·k), the weights are handed to a `visit` callback that reduces them (a column
sum, a policy's score) and are dropped before the next chunk. Rows before `first` (those
no one reads) go through SDPA without weights. The output equals eager attention.

Decoders are causal and a forward's query rows are its last keys, so a chunk ending at
row e sees no key past ``past + e``: those keys are not read at all (the chunk's weights
are that much narrower), which halves the work of a long prompt.

Grouped-query heads are computed per KV head without copying the cache (query head h
uses KV head h // group, as transformers' ``repeat_kv``). The scaling is applied to the
query rows (a chunk × head_dim tensor) rather than to the logits (chunk × keys).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

CHUNK = 64  # query rows per chunk: 9 MB of float32 weights for 9 heads x 4k keys. Small
# chunks stay in the CPU's caches: measured on this project's 2-core machine (one layer
# of the embedded model, causal keys only), 64 rows take 1.2x SDPA at 2k tokens and
# 1.4x at 4k, where 512 rows take 2.1x and 3.2x

Visit = Callable[[torch.Tensor, int, int], None]  # (weights [b, h, rows, keys], start, stop)


def grouped_logits(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``q·k`` of every query head against its KV head's keys, ``[b, heads, rows, keys]``
    (query head h uses KV head h // group), without copying the keys per query head."""
    batch, heads, rows, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, (heads // kv_heads) * rows, dim)
    return torch.matmul(grouped, key.transpose(2, 3)).view(batch, heads, rows, -1)


def attend(query, key, value, mask, scaling, keep=None):
    """Attention of some query rows with their weights: ``(output [b, h, q, d], weights
    [b, h, q, keys])``. `mask` is these rows' additive or boolean mask; `keep`, a boolean
    broadcastable to ``[b, h, q, keys]``, additionally hides keys."""
    batch, heads, rows, dim = query.shape
    kv_heads = key.shape[1]
    logits = grouped_logits(query * scaling, key)
    if mask is not None:
        if mask.dtype == torch.bool:
            logits.masked_fill_(~mask, float("-inf"))
        else:
            logits += mask
    if keep is not None:
        logits.masked_fill_(~keep, float("-inf"))
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32)
    if weights.dtype != query.dtype:
        weights = weights.to(query.dtype)
    output = torch.matmul(weights.view(batch, kv_heads, -1, weights.shape[-1]), value)
    return output.view(batch, heads, rows, dim), weights


def sdpa(query, key, value, mask, scaling) -> torch.Tensor:
    """Attention output of the given query rows through SDPA (no weights)."""
    return torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )  # fmt: skip


def chunked_attention(query, key, value, mask, scaling, visit: Visit, first: int = 0,
                      chunk: int | None = None) -> torch.Tensor:  # fmt: skip
    """Attention output ``[b, h, rows, d]``; the weights of rows `first`.. go to `visit`,
    chunk by chunk of `chunk` rows (default `CHUNK`), ``[b, h, chunk rows, keys seen]``
    (keys up to the chunk's last row), and are never kept."""
    rows = query.shape[2]
    past = key.shape[2] - rows  # keys cached before this forward
    chunk = chunk or CHUNK
    outputs = []
    if first:
        seen = past + first
        outputs.append(sdpa(query[:, :, :first], key[:, :, :seen], value[:, :, :seen],
                            _rows(mask, 0, first, seen), scaling))  # fmt: skip
    for start in range(first, rows, chunk):
        stop = min(start + chunk, rows)
        seen = past + stop
        output, weights = attend(query[:, :, start:stop], key[:, :, :seen], value[:, :, :seen],
                                 _rows(mask, start, stop, seen), scaling)  # fmt: skip
        visit(weights, start, stop)
        outputs.append(output)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


def _rows(mask, start, stop, seen):
    return None if mask is None else mask[:, :, start:stop, :seen]


def register(name: str, function) -> None:
    """Register an attention function with transformers (masks built as for eager)."""
    AttentionInterface.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, eager_mask)
