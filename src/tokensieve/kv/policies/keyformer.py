"""Keyformer (Adnan et al., MLSys 2024): Gumbel-regularised key-token scores.

As the paper defines it (and as the reference code, d-matrix-ai/keyformer-llm,
computes the score): a slot's score accumulates, over forwards,
``softmax((a + ζ) / τ_t)`` summed over queries, where ``a`` are the pre-softmax
attention logits, ``ζ`` i.i.d. Gumbel(0, 1) noise and the temperature rises
linearly ``τ_t = τ_init + t·(τ_end − τ_init)/max_new_tokens`` with the forward count
``t`` (0 at prefill). Since ``log A = a − logsumexp(a)``, the logits are recovered
from the attention weights up to a per-row constant, which the softmax cancels.
The budget is split into a recent window (30% by default) and key tokens; there is
no explicit sink. The reference masks discarded tokens; here they are evicted.
With grouped-query attention a KV head sums its query heads' scores.

Where the authors' code departs from the paper, tokensieve follows the paper: the key
tokens are chosen again at every decoding step. In the reference
(``models/mpt-keyformer-lib/attention.py`` at f327831, lines 152–193, the GPT-J and
Cerebras files alike) the selection freezes after the prompt: evicted tokens' scores
are zeroed and masked before the next softmax, an AND of masks keeps them out, and an
off-by-one between the length-L scores and the length-(L+1) mask drops the token that
leaves the recent window; scores keep accumulating but the kept set never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokensieve.kv.policy import KVPolicy, per_kv_head


@dataclass
class KeyformerPolicy(KVPolicy):
    recent: float | int = 0.3
    tau_init: float = 1.0
    tau_end: float = 2.0
    max_new_tokens: int = 128
    seed: int = 0
    name = "keyformer"
    ordered = True  # noise drawn per slot / pooling over neighbours
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.generator = torch.Generator().manual_seed(self.seed)

    def temperature(self, step: int) -> float:
        slope = (self.tau_end - self.tau_init) / max(self.max_new_tokens, 1)
        return self.tau_init + step * slope

    def score(self, scores, seen):
        # Gumbel(0, 1) = -log(-log U); in place, as a prefill chunk holds many entries.
        # Drawn chunk by chunk of query rows: a run is reproducible for a given chunking
        # (`tokensieve.attention.CHUNK`), not across chunkings.
        attention = seen.attention
        noise = torch.rand(attention.shape, generator=self.generator)
        noise = noise.to(attention.device).clamp_(1e-10, 1 - 1e-10)
        logits = attention.float().log()  # masked keys: log 0 = -inf
        logits -= noise.log_().neg_().log_()
        logits /= self.temperature(seen.step)
        weights = torch.softmax(logits, dim=-1)
        return scores + per_kv_head(weights, seen.kv_heads).sum(dim=(2, 3))
