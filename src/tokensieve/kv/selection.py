"""Token *selection* without eviction: every key stays cached, each decode step attends
to a chosen few (TokenSelect, TidalDecode). Memory is not saved; attention work is.

The protocol is one method: ``select(module, query, key, cache)`` returns which keys
the query may see (or None: all), reading and updating the policy's own state
(``cache.policy_state``, from ``new_state``). A registered transformers attention
function (``tokensieve_selective``) asks the policy at decode steps (one query row) and
attends over the chosen keys only, gathered, so a step's cost follows the budget, not
the context. Prefill runs through SDPA, unless the policy's ``prefill`` is
``"sparse"``: the prompt's rows are then read in chunks of the policy's ``chunk`` rows,
each chunk asks ``select`` once (its rows share the choice, causality on top) and
attends over its choice, gathered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensieve.attention import attend, register, sdpa
from tokensieve.kv.policy import Budget

IMPLEMENTATION = "tokensieve_selective"


@dataclass
class Shared:
    """One choice of keys for every head: positions ``[batch, count]`` (any order) and,
    when some entries must be ignored (a repeat), which ones count ``[batch, count]``."""

    indices: torch.Tensor
    valid: torch.Tensor | None = None


@dataclass
class SelectionPolicy(Budget):
    """Base for policies that select per step instead of evicting."""

    compresses: ClassVar[str] = "never"

    def select(self, module, query: torch.Tensor, key: torch.Tensor, cache):
        """The keys the query may attend to: a bool mask ``[batch, heads, 1, keys]``
        (per head), a `Shared` choice for every head, or None (all).

        Args: query ``[batch, heads, rows, dim]`` (after RoPE; one row at a decode step,
        a chunk of the prompt under a sparse prefill, whose last row sits at the last
        key), key ``[batch, kv_heads, keys, dim]`` (cached, after RoPE). Under a sparse
        prefill the choice must be `Shared`.
        """
        raise NotImplementedError


def _shared_gathered_attention(query, key, value, mask, scaling, shared: Shared):
    """`gathered_attention` for a `Shared` choice: each KV head's chosen rows are
    gathered once and read by its group of query heads, for one or several query rows
    (a prefill chunk; `mask` gives causality)."""
    rows, chosen = query.shape[2], shared.indices  # [b, count]
    picked_mask = None
    if mask is not None:  # [b, 1, rows, keys] → the chosen columns
        index = chosen[:, None, None, :].expand(-1, mask.shape[1], rows, -1)
        picked_mask = mask[:, :, -rows:, :].gather(-1, index)
    valid = None if shared.valid is None else shared.valid[:, None, None, :]
    return attend(query, take(key, chosen), take(value, chosen), picked_mask, scaling,
                  valid)[0]  # fmt: skip


def take(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``states[b, :, positions[b]]``: rows of ``[batch, heads, n, d]`` at ``[batch, k]``
    positions, by `index_select` (a gather with a full ``[b, h, k, d]`` index tensor
    reads that index as well, and measured 3-5x slower on CPU)."""
    if states.shape[0] == 1:
        return states.index_select(2, positions[0])
    return torch.stack([s.index_select(1, p) for s, p in zip(states, positions, strict=True)])


def _shared_from_mask(keep: torch.Tensor) -> Shared:
    """A `Shared` choice from a bool mask that is the same for every head."""
    row = keep[:, 0, 0]  # [b, keys]
    count = int(row.sum(dim=-1).max())  # batch rows may keep fewer: the rest is masked
    chosen = row.to(torch.int8).topk(count, dim=-1, sorted=False).indices
    return Shared(chosen, row.gather(-1, chosen))


def selective_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """At single-query steps, attention over the keys the policy selects, gathered; a
    sparse prefill in chunks that each select; otherwise SDPA."""
    cache = getattr(module, "_tokensieve_cache", None)
    if query.shape[2] > 1:
        if cache is None or getattr(cache.policy, "prefill", "full") != "sparse":
            output = sdpa(query, key, value, attention_mask, scaling)
        else:
            output = sparse_prefill(module, query, key, value, attention_mask, scaling, cache)
        return output.transpose(1, 2).contiguous(), None
    keep = None if cache is None else cache.policy.select(module, query, key, cache)
    if keep is None:
        output = sdpa(query, key, value, attention_mask, scaling)
    else:
        output = gathered_attention(query, key, value, attention_mask, scaling, keep)
    return output.transpose(1, 2).contiguous(), None


def sparse_prefill(module, query, key, value, mask, scaling, cache) -> torch.Tensor:
    """The prompt's query rows in chunks of ``cache.policy.chunk``: each chunk sees the
    keys up to its last row, asks the policy which (one choice for its rows) and attends
    to those under the causal mask. ``[b, heads, rows, d]``."""
    rows, keys = query.shape[2], key.shape[2]
    past = keys - rows  # keys cached before this forward
    if mask is None:  # causal by positions (eager masks are always given; this is a guard)
        positions = torch.arange(keys, device=query.device)
        mask = (positions[None, :] <= positions[past:, None])[None, None]
    outputs = []
    for start in range(0, rows, cache.policy.chunk):
        stop = min(start + cache.policy.chunk, rows)
        seen = past + stop
        chunk = query[:, :, start:stop]
        chunk_keys, chunk_values = key[:, :, :seen], value[:, :, :seen]
        chunk_mask = mask[:, :, start:stop, :seen]
        keep = cache.policy.select(module, chunk, chunk_keys, cache)
        if keep is not None and not isinstance(keep, Shared):
            raise NotImplementedError("a sparse prefill needs one choice for every head")
        if keep is None:
            outputs.append(sdpa(chunk, chunk_keys, chunk_values, chunk_mask, scaling))
        else:
            outputs.append(_shared_gathered_attention(chunk, chunk_keys, chunk_values,
                                                      chunk_mask, scaling, keep))  # fmt: skip
    return torch.cat(outputs, dim=2)


def gathered_attention(query, key, value, mask, scaling, keep) -> torch.Tensor:
    """One query row per head attending to its selected keys only: ``[b, heads, 1, d]``.

    `keep` is a `Shared` choice, or a bool ``[b, heads, 1, keys]`` marking the same number
    of keys for every head (TidalDecode chooses a fixed count per head). Only those keys
    and values are gathered, from their KV head (query head h reads KV head h // group,
    as transformers' grouping), without copying the cache per query head.
    """
    batch, heads, _, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    if isinstance(keep, Shared):  # one choice for every head (TokenSelect): per KV head
        return _shared_gathered_attention(query, key, value, mask, scaling, keep)
    if keep.stride(1) == 0:  # the same mask for every head (an expanded view)
        return _shared_gathered_attention(query, key, value, mask, scaling,
                                          _shared_from_mask(keep))  # fmt: skip
    count = int(keep[0, 0, 0].sum())
    # positions of the kept keys per head, in order: the largest `count` of a 0/1 row
    chosen = keep[:, :, 0].to(torch.int8).topk(count, dim=-1, sorted=False).indices
    chosen = chosen.sort(dim=-1).values  # [b, heads, count]
    # query heads g*group .. (g+1)*group-1 read KV head g: one index_select per KV head
    per_kv = chosen.reshape(batch, kv_heads, (heads // kv_heads) * count)
    picked_keys = torch.cat([take(key[:, g : g + 1], per_kv[:, g]) for g in range(kv_heads)], 1)
    picked_values = torch.cat([take(value[:, g : g + 1], per_kv[:, g])
                               for g in range(kv_heads)], 1)  # fmt: skip
    picked_keys = picked_keys.view(batch, heads, count, dim)
    picked_values = picked_values.view(batch, heads, count, dim)
    picked_mask = None
    if mask is not None:  # the chosen columns of each head
        rows = mask[:, :, -1:, :].expand(batch, heads, 1, keys)
        picked_mask = rows.gather(-1, chosen[:, :, None, :])
    return attend(query, picked_keys, picked_values, picked_mask, scaling)[0]


register(IMPLEMENTATION, selective_attention)
