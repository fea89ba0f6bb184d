"""The byte-level model as `generate`'s samplers see a language model: 257 "tokens" (the
256 bytes, then the end), one state per particle. AWRS, masking and SMC then draw byte by
byte, so a constraint and a prompt need not align with the model's tokens."""

from __future__ import annotations

import numpy as np

from tokensieve.bytes.byte_model import END, ByteLM


class ByteSamplerView:
    """`model` read over bytes after the token context `prompt_ids` (the chat prompt)."""

    vocab_size = 257
    token_bytes = [bytes([b]) for b in range(256)] + [b""]
    eos_ids = {END}
    tokenizer = None  # token-level grammars (llguidance) cannot read bytes

    def __init__(self, model, tokenizer, prompt_ids: list[int], beam=None, covers="canonical"):
        self.byte_lm = ByteLM(model, tokenizer, context_ids=prompt_ids, beam=beam, covers=covers)
        self.forbidden = np.zeros(self.vocab_size, dtype=bool)
        self.states = []

    def start(self, particles: int) -> np.ndarray:
        first = self.byte_lm.start()
        self.states = [first] * particles
        return np.tile(first.next_logprobs(), (particles, 1))

    def step(self, tokens: list[int]) -> np.ndarray:
        """Advance every particle by its byte (the end, once chosen, ends it)."""
        rows = []
        for i, token in enumerate(tokens):
            if token != END:
                self.states[i] = self.states[i].advance(int(token))
            rows.append(self.states[i].next_logprobs())
        return np.stack(rows)

    def select(self, rows: list[int]) -> None:
        self.states = [self.states[r] for r in rows]
