"""StreamingLLM (Xiao et al., ICLR 2024): attention sinks + a recent window, no scores.

Keeps the first `sink` tokens (4 in the paper) and fills the rest of the budget with
the most recent tokens, the same set in every layer and head. The paper re-rotates
cached keys to their in-cache positions ("pos shift", §3.2), which is what lets it read
past the model's context: a cache built with ``pos_shift`` (`tokensieve.kv.rotation`)
does that, and `tokensieve kv stream` uses it by default. Without it (the default of
`CompressedCache`, and of `kv generate`/`kv eval`) kept keys keep their rotation in the
text, as kvpress's StreamingLLMPress does without its KeyRerotationPress.
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
