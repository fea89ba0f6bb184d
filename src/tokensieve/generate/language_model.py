"""The language model as samplers see it: next-token log-probabilities per particle.

All particles share the prompt, which is prefilled once; each step feeds one token per
live particle as a single batch, so particles cost one batched forward pass per token.
Particles advance in lock-step, so their sequences always have equal length and need
no padding; resampling and finished particles only reorder the KV cache's batch rows.
"""

from __future__ import annotations

import numpy as np
import torch

from tokensieve.errors import UserError
from tokensieve.lm import check_context, end_of_turn_ids, special_ids, vocabulary_bytes
from tokensieve.models import with_cache


class TokenLM:
    """A causal LM, its token byte table, and a batched KV cache over particles.

    Args:
        model, tokenizer: a transformers causal LM and its tokenizer.
        prompt_ids: the context every particle continues.
    """

    def __init__(self, model, tokenizer, prompt_ids: list[int]):
        if not prompt_ids:
            raise UserError("the prompt must hold at least one token")
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        vocab = model.config.vocab_size
        self.vocab_size = vocab
        self.token_bytes = vocabulary_bytes(tokenizer)[:vocab]
        self.token_bytes += [b""] * (vocab - len(self.token_bytes))
        self.eos_ids = set(end_of_turn_ids(tokenizer))
        if not self.eos_ids:  # a text must be able to end: the constraint checks it complete
            raise UserError("the model's tokenizer has no end token (EOS or <|im_end|>), so "
                            "a constrained text could never be complete")  # fmt: skip
        special = special_ids(tokenizer)  # added tokens that are text stay allowed
        # Tokens that can never be generated: other specials, padding rows past the tokenizer.
        self.forbidden = np.zeros(vocab, dtype=bool)
        for token_id in special - self.eos_ids:
            if token_id < vocab:
                self.forbidden[token_id] = True
        self.forbidden[len(tokenizer) :] = True
        self.cache = None
        self.length = 0

    @torch.no_grad()
    def start(self, particles: int) -> np.ndarray:
        """Prefill the prompt; return ``[particles, vocab]`` next-token log-probs."""
        from transformers import DynamicCache

        check_context(self.model, len(self.prompt_ids) + 1)
        self.cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([self.prompt_ids], device=self.model.device)
        logits = self.model(input_ids=ids, **with_cache(self.cache), use_cache=True).logits
        self.cache.batch_repeat_interleave(particles)
        self.length = len(self.prompt_ids)
        return self._log_probs(logits[:, -1]).repeat(particles, axis=0)

    @torch.no_grad()
    def step(self, tokens: list[int]) -> np.ndarray:
        """Append one token per cache row; return ``[rows, vocab]`` log-probs."""
        check_context(self.model, self.length + 1)
        ids = torch.tensor(tokens, dtype=torch.long, device=self.model.device)[:, None]
        logits = self.model(input_ids=ids, **with_cache(self.cache), use_cache=True).logits
        self.length += 1
        return self._log_probs(logits[:, -1])

    def select(self, rows: list[int]) -> None:
        """Keep cache rows `rows` in this order (duplicates copy a particle)."""
        self.cache.reorder_cache(torch.tensor(rows, dtype=torch.long, device=self.model.device))

    def _log_probs(self, logits: torch.Tensor) -> np.ndarray:
        return torch.log_softmax(logits.float(), dim=-1).double().cpu().numpy()
