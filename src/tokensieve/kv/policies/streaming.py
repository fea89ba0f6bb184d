"""StreamingLLM (Xiao et al., ICLR 2024): attention sinks + a recent window, no scores.

Keeps the first `sink` tokens (4 in the paper) and fills the rest of the budget with
the most recent tokens, the same set in every layer and head. The paper re-rotates
cached keys to their in-cache positions ("pos shift"); keys here keep their original
RoPE rotation, as kvpress's StreamingLLMPress does without its KeyRerotationPress. This
is a deviation from the paper (no pos-shift yet), so texts longer than the model's
context cannot be streamed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensieve.kv.policy import KVPolicy


@dataclass
class StreamingPolicy(KVPolicy):
    sink: int = 4
    name = "streaming"
    reads = "nothing"

    def recent_slots(self, budget: int) -> int:
        return max(0, budget - self.sink)
