"""Which tokens a policy keeps: the most direct picture of "key tokens"."""

from __future__ import annotations

import numpy as np
import torch

from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.options import make_kv_policy, parse_budget
from tokensieve.kv.policy import KVPolicy
from tokensieve.models import model_display_name, with_cache
from tokensieve.report.plots import heatmap


@torch.no_grad()
def kept_map(model, ids: list[int], policy: KVPolicy) -> np.ndarray:
    """Share of KV heads keeping each position after the policy compresses `ids`.

    Reads `ids` as one prompt (prefill compression). Returns ``[layers, len(ids)]``
    values in [0, 1]: 1 = every KV head of that layer kept the token.
    """
    cache = CompressedCache(model.config, policy)
    with compression(model, cache):
        model(input_ids=torch.tensor([ids], device=model.device), **with_cache(cache),
              use_cache=True)  # fmt: skip
    share = np.zeros((len(cache.layers), len(ids)))
    for layer, positions in enumerate(cache.kept_positions()):
        heads = positions[0]  # [kv_heads, kept]
        for head in heads:
            share[layer, head.cpu().numpy()] += 1.0 / heads.shape[0]
    return share


class KeptSignal:
    """``kv_kept`` for `inspect` (`tokensieve.extensions.ExtraSignal`): the share of layers
    × KV heads keeping each token after `policy` compresses the text at `budget`, and the
    positions × layers heatmap of it."""

    name = "kv_kept"
    unit = "share of layers × KV heads keeping it"

    def __init__(self, policy: str, budget: str = "0.2"):
        self.budget = budget
        self.policy = make_kv_policy(policy, parse_budget(budget))  # checked before loading

    def __call__(self, model, context_ids: list[int], token_ids: list[int]):
        share = kept_map(model, list(context_ids) + list(token_ids), self.policy)
        share = share[:, len(context_ids) :]
        title = (f"{self.policy.name} at budget {self.budget}: kept tokens per layer "
                 f"({model_display_name(model)})")  # fmt: skip
        plot = heatmap(
            share, title, "token position", "layer", "share of KV heads keeping the token"
        )
        return share.mean(axis=0), {"kv-kept.png": plot}
