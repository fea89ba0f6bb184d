"""TokenSelect (Wu et al., 2024): per-head query-key criticality with soft voting.

Per the reference (pzs19/TokenSelect, `TokenRetriever`): at each decode step and
layer, every query head scores the cached keys by ``q_h·k`` (no 1/√d, as the code),
normalises with a softmax over the candidate positions, and the heads vote by summing
those probabilities; the query attends to the first `sink` tokens, the `top_k` most
voted and the last `recent` ones, the same set for every head of the layer. The
selection cache (reuse the previous step's choice when the query's cosine similarity
to it is at least `reuse_threshold`) is off by default, as in the released code.
Deviation: the reference scores un-rotated keys with a rotated query; transformers
caches rotated keys, which are used here. Query head h uses KV head h // group
(transformers' grouping). Prefill is full. Nothing is evicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokensieve.kv.selection import SelectionPolicy, per_head_logits


@dataclass
class TokenSelectState:
    """Per layer, the last query (flattened) and the positions it chose."""

    memory: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass
class TokenSelectPolicy(SelectionPolicy):
    sink: int = 4
    recent: float | int = 0.25
    reuse_threshold: float | None = None
    name = "tokenselect"

    def new_state(self) -> TokenSelectState:
        return TokenSelectState()

    def select(self, module, query, key, cache):
        keys, budget = key.shape[2], cache.budget
        local = self.recent_slots(budget)
        top_k = budget - self.sink - local
        if self.sink + top_k + local >= keys:
            return None
        flat = query.flatten(1)
        memory = cache.policy_state.memory.get(module.layer_idx)
        reuse = (
            self.reuse_threshold is not None
            and memory is not None
            and float(torch.cosine_similarity(flat, memory[0], dim=-1).min())
            >= self.reuse_threshold
        )
        if reuse:
            chosen = memory[1]
        else:
            scores = per_head_logits(query, key)
            candidates = scores[:, :, 0, self.sink : keys - local]  # [batch, heads, m]
            votes = torch.softmax(candidates.float(), dim=-1).sum(dim=1)  # [batch, m]
            chosen = votes.topk(top_k, dim=-1).indices + self.sink
            cache.policy_state.memory[module.layer_idx] = (flat, chosen)
        keep = torch.zeros(query.shape[0], keys, dtype=torch.bool, device=query.device)
        keep[:, : self.sink] = True
        keep[:, keys - local :] = True
        keep.scatter_(1, chosen, True)
        return keep[:, None, None, :].expand(-1, query.shape[1], 1, -1)
