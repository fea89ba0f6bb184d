"""TokenSelect (Wu et al., 2024): per-head query-key criticality with soft voting.

As the reference does it (pzs19/TokenSelect at 8e1e97f, ``patcher/token_retrieval.py``):

- **Criticality is content only.** The reference caches keys *without* RoPE and scores
  them against the query rotated at one fixed position, ``n_local`` (the size of the
  local window), so the ranking carries no distance bias (``retrieval_indices``,
  ``QUERY_ROTATE``). transformers caches rotated keys, so this policy keeps an
  un-rotated copy beside them (each key rotated back once, by its position, when it first
  takes part in a selection; grown in place, not copied per step) and rotates the query
  from its position to ``local``. A model without plain RoPE is refused.
- **Soft voting.** Every query head scores the candidates by ``q_h·k`` (no 1/√d, as the
  reference's kernel), a softmax per head over the candidates (the keys between the
  `sink` first and the `local` last), and the heads vote by summing those probabilities;
  the top-k of the vote plus the sink and the local window are attended to, the same
  set for every head of the layer. Query head h pairs with KV head h // group, as
  attention does (the reference's kernel uses ``head_id % NUM_KV_HEADS``, which pairs
  differently from its own attention under GQA; tokensieve follows attention).
- **Selection cache** (`reuse_threshold`): when the cosine similarity between the
  flattened fixed-position query and the one of the last *recomputed* selection is at
  least the threshold, that selection's top-k is reused (sink and local window are
  always current). The reference's is 0.9 but switched off (``QUERY_CACHE = False``);
  off (None) by default here too. `TokenSelectState` counts recomputations and reuses.
- **Prefill** (`prefill`): ``"full"`` (default) attends fully; ``"sparse"`` reads the
  prompt in chunks of `chunk` rows (the reference's ``PREFILL_CHUNK_SIZE = 512``): each
  chunk selects once, from the mean of its queries, each rotated at ``local + j`` (the
  reference's fingerprint), and attends causally to the sink, the chosen keys and the
  local window. A chunk longer than the local window always sees itself (the reference
  never meets this: its window, 512, equals its chunk).

Deviations from the reference: the budget is a share of the prompt (or a count), not
the fixed 128 + 2048 + 512; attention itself uses the keys' true positions, where the
reference re-numbers the attended keys 0..N-1 (its length extrapolation beyond the
model's window); the reference's optional max-pool smoothing of the votes (off in its
server) is not implemented. Nothing is evicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokensieve.attention import grouped_logits
from tokensieve.errors import UserError
from tokensieve.kv.rotation import rotate
from tokensieve.kv.selection import SelectionPolicy, Shared

PREFILLS = ("full", "sparse")


@dataclass
class ContentKeys:
    """One layer's keys without RoPE, ``buffer[:, :, :length]``; room doubles when full,
    so a decode step adds one key without copying the others."""

    buffer: torch.Tensor
    length: int = 0

    def extend(self, rotated: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
        """Bring the copy up to the keys `rotated` ``[b, kv, n, d]`` holds (slot i sits
        at position i: selection never evicts) and return it."""
        total = rotated.shape[2]
        if total > self.buffer.shape[2]:
            grown = self.buffer.new_empty(*self.buffer.shape[:2], 2 * total, self.buffer.shape[3])
            grown[:, :, : self.length] = self.buffer[:, :, : self.length]
            self.buffer = grown
        if total > self.length:
            at = torch.arange(self.length, total, device=rotated.device)
            self.buffer[:, :, self.length : total] = rotate(rotated[:, :, self.length :], -at,
                                                            inv_freq)  # fmt: skip
            self.length = total
        return self.buffer[:, :, :total]


@dataclass
class TokenSelectState:
    """Per layer: the un-rotated keys and the last recomputed (query fingerprint, top-k);
    how many selections were computed and how many reused."""

    content: dict[int, ContentKeys] = field(default_factory=dict)
    memory: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0


@dataclass
class TokenSelectPolicy(SelectionPolicy):
    sink: int = 4
    recent: float | int = 0.25
    reuse_threshold: float | None = None
    prefill: str = "full"
    chunk: int = 512
    name = "tokenselect"
    needs_rope = True

    def __post_init__(self) -> None:
        super().__post_init__()
        threshold = self.reuse_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise UserError(f"`reuse_threshold` must be in [0, 1], got {threshold}")
        if self.prefill not in PREFILLS:
            raise UserError(f"TokenSelect's `prefill` is full or sparse, got {self.prefill!r}")
        if self.chunk < 1:
            raise UserError(f"`chunk` must be at least 1, got {self.chunk}")

    def new_state(self) -> TokenSelectState:
        return TokenSelectState()

    def select(self, module, query, key, cache):
        """The keys `query` (one decode row, or a prefill chunk whose last row sees the
        last of `key`) attends to: sink, chosen and local positions, shared by heads and
        rows (`Shared`)."""
        rows, keys, budget = query.shape[2], key.shape[2], cache.resolve_budget()
        local = max(self.recent_slots(budget), rows)  # a chunk always sees itself
        top_k = budget - self.sink - self.recent_slots(budget)
        if self.sink + top_k + local >= keys:
            return None
        state, layer = cache.policy_state, module.layer_idx
        if layer not in state.content:
            state.content[layer] = ContentKeys(key.new_empty(*key.shape[:2], keys, key.shape[3]))
        content = state.content[layer].extend(key, cache.rope)
        # the fingerprint: each row's query rotated from its position to local + j, averaged
        shift = self.recent_slots(budget) - (keys - rows)
        fingerprint = rotate(query, torch.full((1,), shift, device=query.device), cache.rope)
        fingerprint = fingerprint.mean(dim=2, keepdim=True)  # [b, heads, 1, d]
        flat = fingerprint.flatten(1)
        memory = state.memory.get(layer)
        reuse = (
            self.reuse_threshold is not None
            and memory is not None
            and memory[1].shape[-1] == top_k
            and float(torch.cosine_similarity(flat, memory[0], dim=-1).min())
            >= self.reuse_threshold
        )
        if reuse:
            chosen = memory[1]
            state.reused += 1
        else:
            scores = grouped_logits(fingerprint, content[:, :, self.sink : keys - local])
            votes = torch.softmax(scores[:, :, 0].float(), dim=-1).sum(dim=1)  # [batch, m]
            # in position order: reading the chosen keys then walks memory forwards
            chosen = votes.topk(top_k, dim=-1).indices.sort(dim=-1).values + self.sink
            state.memory[layer] = (flat, chosen)
            state.computed += 1
        batch, device = query.shape[0], query.device
        fixed = torch.cat([torch.arange(self.sink, device=device),
                           torch.arange(keys - local, keys, device=device)])  # fmt: skip
        indices = torch.cat([fixed.expand(batch, -1), chosen], dim=-1)
        valid = None
        if reuse:  # a reused choice may have entered the local window since: count it once
            valid = torch.cat([torch.ones_like(fixed, dtype=torch.bool).expand(batch, -1),
                               chosen < keys - local], dim=-1)  # fmt: skip
        return Shared(indices, valid)
