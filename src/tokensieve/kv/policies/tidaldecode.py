"""TidalDecode (Yang et al., 2024): select tokens in a few layers, reuse them in the rest.

Per the reference (DerrickYLJ/TidalDecode, HF implementation): at each decode step,
layers before `sparse_start` attend fully; layer `sparse_start` attends fully and picks,
per query head, the `budget` keys with the largest scaled logits ``q·k/√d``; the
following layers attend only to those positions ("position persistent"); the
`correction_layer` attends fully again and re-selects for the layers after it.
No sink or recent window (as the reference; `sink` and `recent` are not read). Prefill is
full. Nothing is evicted. Defaults: `sparse_start` 2 and `correction_layer` 13, the
reference's run script for Llama-3-8B (its HF code defaults to 9); a model with fewer
layers uses its last layer as the correction layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokensieve.attention import grouped_logits
from tokensieve.kv.selection import SelectionPolicy


@dataclass
class TidalDecodeState:
    """The positions the last selection layer chose, ``[batch, heads, 1, count]``."""

    positions: torch.Tensor | None = None


@dataclass
class TidalDecodePolicy(SelectionPolicy):
    sparse_start: int = 2
    correction_layer: int = 13
    name = "tidaldecode"

    def new_state(self) -> TidalDecodeState:
        return TidalDecodeState()

    def select(self, module, query, key, cache):
        layer, keys = module.layer_idx, key.shape[2]
        count = min(cache.budget, keys)
        correction = min(self.correction_layer, len(cache.layers) - 1)
        if layer < self.sparse_start or count >= keys:
            return None
        if layer in (self.sparse_start, correction):
            logits = grouped_logits(query, key)
            positions = (logits * module.scaling).topk(count, -1).indices
            cache.policy_state.positions = positions
            return None  # selection layers attend fully
        positions = cache.policy_state.positions
        keep = torch.zeros(*query.shape[:2], 1, keys, dtype=torch.bool, device=query.device)
        return keep.scatter(-1, positions, True)
