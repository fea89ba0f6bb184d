"""Scoring every token: the foundation of the idea "score every token, act on the few".

`next_token_stats` turns logits into entropy, surprisal, top-1 probability and margin;
`score_sequence` reads a sequence in chunks through a KV cache and reduces attention
weights as they are computed (the chunked routine of `tokensieve.attention`, shared with
the KV policies), so a 4,096-token text never materialises an ``[heads, n, n]`` matrix;
`forking_tokens` marks the exact top-rho entropy minority. `inspect` reports these
signals, `rl` trains on them.

For token ``t_i`` every signal describes the moment the model produced (or would
produce) it, i.e. the next-token distribution ``p(. | t_<i)`` read at position ``i-1``:

- ``entropy``: ``H = -sum_v p(v) log p(v)`` over the full vocabulary at temperature 1,
  in nats, from float32 log-softmax (numerically stable). High entropy marks a *fork*.
- ``surprisal``: ``-log p(t_i | t_<i)`` in nats.
- ``top1_prob`` and ``margin``: the largest probability and its lead over the second.
- ``attention_received``: how much later queries attend to the token: the attention
  weight ``A[l, h, q, i]`` averaged over layers ``l``, heads ``h`` and the queries
  ``q >= i`` that can see it (the token itself included, so the last token is defined).
- ``attention_total``: the same sum over queries without dividing by their number:
  H2O's accumulated "heavy hitter" score, which favours early tokens by construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from tokensieve.attention import chunked_attention, register
from tokensieve.errors import UserError
from tokensieve.lm import attention_modules, check_context
from tokensieve.models import with_cache
from tokensieve.signal_names import SIGNALS


def next_token_stats(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy, surprisal, top-1 probability and margin of each row's distribution.

    Args:
        logits: ``[m, vocab]`` raw logits (temperature 1, no processing).
        targets: ``[m]`` the token actually at each next position.
    Computed in float32 relative to each row's largest logit, so a dominant logit gives
    entropy 0, not NaN: with ``z = logits - max``, ``e = exp(z)`` and ``s = sum(e)``,
    ``H = log s - sum(e z) / s``. Four passes over the ``[m, vocab]`` logits (top-2,
    ``z``, ``exp``, the sums) instead of a stored log-softmax and its products: on the
    embedded model's 49k vocabulary these statistics cost as much as the LM head itself.
    """
    logits = logits.float()
    top2 = logits.topk(min(2, logits.shape[-1]), dim=-1).values
    z = logits - top2[:, :1]
    e = z.exp()
    total = e.sum(-1)
    log_total = total.log()
    log_norm = top2[:, 0] + log_total  # log sum exp of the logits
    top = (top2 - log_norm[:, None]).exp()
    second = top[:, 1] if top.shape[-1] > 1 else torch.zeros_like(top[:, 0])
    return {
        "entropy": log_total - torch.linalg.vecdot(e, z) / total,
        "surprisal": log_norm - logits.gather(1, targets[:, None].long())[:, 0],
        "top1_prob": top[:, 0],
        "margin": top[:, 0] - second,
    }


@torch.no_grad()
def score_sequence(
    model,
    ids: torch.Tensor,
    first: int,
    *,
    chunk_size: int = 512,
    attention: bool = True,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Signals for tokens ``ids[first:]`` of one sequence, conditioned on all before.

    Args:
        ids: ``[n]`` token ids; ``ids[:first]`` is context only (BOS, a prompt).
        first: index of the first analysed token, ``>= 1`` (it needs a predecessor).
        chunk_size: query positions per forward pass; bounds attention memory to
            ``heads * chunk_size * n`` floats per layer.
    Returns:
        ``{signal: float64 array of length n - first}``.
    """
    from transformers import DynamicCache

    if first < 1:
        raise ValueError("first must be >= 1: the first token has no prediction")
    n = int(ids.shape[0])
    check_context(model, n)
    out = {name: np.full(n - first, np.nan) for name in SIGNALS}
    received = _AttentionReceived(n, ids.device)
    cache = DynamicCache(config=model.config)
    with received.attached(model) if attention else nullcontext():
        for start in tqdm(range(0, n, chunk_size), desc="signals", unit="chunk",
                          disable=not progress):  # fmt: skip
            end = min(start + chunk_size, n)
            received.head_layers = 0
            logits = model(
                input_ids=ids[None, start:end], **with_cache(cache), use_cache=True
            ).logits[0]
            # Position p predicts token p + 1; keep predictions of analysed tokens.
            lo, hi = max(start, first - 1), min(end, n - 1)
            if lo >= hi:
                continue
            stats = next_token_stats(logits[lo - start : hi - start], ids[lo + 1 : hi + 1])
            for name, column in stats.items():
                out[name][lo + 1 - first : hi + 1 - first] = column.double().cpu().numpy()
    if attention:
        out.update(received.signals(first))
    return out


RECEIVED = "tokensieve_received"


class _AttentionReceived:
    """Sums each key's attention weight over layers, heads and queries as the chunked
    attention computes it, so the weights never outlive their chunk of query rows."""

    def __init__(self, n: int, device):
        self.received = torch.zeros(n, dtype=torch.float64, device=device)
        self.head_layers = 0  # heads × layers of the last chunk (the same for every chunk)

    @contextmanager
    def attached(self, model) -> Iterator[None]:
        """The model attends through `_received_attention`, adding up here."""
        previous = model.config._attn_implementation
        modules = attention_modules(model)
        for module in modules:
            module._tokensieve_received = self
        model.set_attn_implementation(RECEIVED)
        try:
            yield
        finally:
            model.set_attn_implementation(previous)
            for module in modules:
                module.__dict__.pop("_tokensieve_received", None)

    def add(self, weights: torch.Tensor) -> None:
        """One chunk of query rows' weights ``[batch, heads, rows, keys]``."""
        self.received[: weights.shape[-1]] += weights.sum(dim=(0, 1, 2)).double()

    def signals(self, first: int) -> dict[str, np.ndarray]:
        n = self.received.shape[0]
        per_head_layer = (self.received / max(self.head_layers, 1)).cpu()
        seen_by = torch.arange(n, 0, -1, dtype=torch.float64)  # queries q >= i
        return {
            "attention_total": per_head_layer[first:].numpy(),
            "attention_received": (per_head_layer / seen_by)[first:].numpy(),
        }


def _received_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    received = module._tokensieve_received
    output = chunked_attention(query, key, value, attention_mask, scaling,
                               lambda weights, *_: received.add(weights))  # fmt: skip
    received.head_layers += query.shape[1]
    return output.transpose(1, 2).contiguous(), None


register(RECEIVED, _received_attention)


def forking_tokens(signals, rho: float = 0.2) -> np.ndarray:
    """Mark exactly ``ceil(rho * n)`` highest-entropy tokens (the forking minority).

    `signals` is an entropy array, or anything whose ``["entropy"]`` is one.
    ``n`` counts tokens with a defined entropy. Ties are broken by position (earlier
    first), so the count is exact even when many entropies are equal. This is the
    paper's "top-20% entropy" set; its 80th-percentile threshold selects the same
    tokens when there are no ties at the boundary.
    """
    if not (isinstance(rho, int | float) and 0.0 < rho <= 1.0):
        raise UserError(f"rho must be in (0, 1], got {rho}")
    entropy = np.asarray(signals if isinstance(signals, np.ndarray) else signals["entropy"])
    defined = np.flatnonzero(~np.isnan(entropy))
    # 1e-9 guards against float error (0.2 * 10 = 2.0000000000000004 must give 2).
    k = min(len(defined), math.ceil(rho * len(defined) - 1e-9))
    order = defined[np.lexsort((defined, -entropy[defined]))]
    mask = np.zeros(len(entropy), dtype=bool)
    mask[order[:k]] = True
    return mask


def display_piece(piece: str) -> str:
    """A token string made visible: whitespace shows as ↵ ␣ ⇥, control bytes escaped."""
    stripped = piece.strip()
    if not stripped:
        return piece.replace("\n", "↵").replace(" ", "␣").replace("\t", "⇥") or "∅"
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in stripped)
