"""SirLLM (Yao, Li, Zhao 2024): keep the tokens the model found surprising, with decay.

Per the reference code (Zoeyyao27/SirLLM): a token's importance is its
self-information ``e_i = -log p(x_i | x_<i)`` from the LM head (one value per token,
shared by every layer and head; the very first token gets the maximum of the list),
and after each eviction all stored values are multiplied by `decay`, so old tokens
fade while new ones enter undecayed. Kept: `sink` first tokens ∪ the most important
ones (``recent`` most recent tokens too, 0 in the paper's configurations).

When: SirLLM selects once per new input (turn), not per generated token. Here the
selection runs at the end of every multi-token forward (each input read), when the
input's own importance is known; generated tokens are kept until the next input.
The reference selects before appending the next input instead, so that input attends
to the compressed cache; here it attends to the answer just generated too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokensieve.kv.policy import KVPolicy


@dataclass
class SirLLMPolicy(KVPolicy):
    sink: int = 4
    decay: float = 0.9
    name = "sirllm"
    needs_attention = False
    needs_logits = True
    compresses = "per input"

    def compress_after_attention(self, layer) -> bool:
        return False

    def after_forward(self, cache, input_ids, logits) -> None:
        if input_ids is None:
            return
        budget = cache.resolve_budget()
        logp = torch.log_softmax(logits.float(), dim=-1)  # [batch, q, vocab]
        new = input_ids.shape[1]
        surprisal = torch.empty(input_ids.shape, dtype=torch.float32)
        surprisal[:, 1:] = -logp[:, :-1].gather(2, input_ids[:, 1:, None])[..., 0]
        last_logits = cache.state.get("sirllm_last_logits")
        if last_logits is not None:
            previous = torch.log_softmax(last_logits.float(), dim=-1)
            surprisal[:, 0] = -previous.gather(1, input_ids[:, :1])[:, 0]
        else:  # the very first token: the maximum of the list (reference code)
            surprisal[:, 0] = surprisal[:, 1:].max() if new > 1 else 0.0
        cache.state["sirllm_last_logits"] = logits[:, -1].detach()
        for layer in cache.layers:
            layer.scores[..., -new:] = surprisal[:, None, :]
        if new > 1:  # a new input was read: select, then let the survivors fade
            for layer in cache.layers:
                indices = self.keep_indices(layer, budget)
                if indices is not None:
                    layer.keep(indices)
                layer.scores[..., :] *= self.decay
