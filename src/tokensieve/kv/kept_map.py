"""Which tokens a policy keeps: the most direct picture of "key tokens"."""

from __future__ import annotations

import numpy as np
import torch

from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.policy import KVPolicy
from tokensieve.models import with_cache


@torch.no_grad()
def kept_map(model, ids: list[int], policy: KVPolicy) -> np.ndarray:
    """Share of KV heads keeping each position after the policy compresses `ids`.

    Reads `ids` as one prompt (prefill compression). Returns ``[layers, len(ids)]``
    values in [0, 1]: 1 = every KV head of that layer kept the token.
    """
    cache = CompressedCache(model.config, policy)
    with compression(model, cache):
        model(input_ids=torch.tensor([ids]), **with_cache(cache), use_cache=True)
    share = np.zeros((len(cache.layers), len(ids)))
    for layer, positions in enumerate(cache.kept_positions()):
        heads = positions[0]  # [kv_heads, kept]
        for head in heads:
            share[layer, head.numpy()] += 1.0 / heads.shape[0]
    return share
