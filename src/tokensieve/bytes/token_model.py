"""Next-token distributions for many token sequences that share their beginnings.

The byte-level algorithm asks for ``p(· | context + L)`` for hypotheses ``L`` that differ
only in their last few tokens. One KV cache follows the questions: it is cut back to the
longest prefix it shares with the next sequence and only the new tokens are read, so a
byte costs one or a few single-token forwards, never a re-read of the context. Answers
are kept (a bounded LRU), since the same ``L`` is asked about at every byte of a token.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from tokensieve.models import with_cache


class TokenModel:
    """``distribution(tokens) -> (probabilities float64 [vocab], prefix sums)``.

    `vocabulary` is a `ByteVocabulary`; probabilities cover the tokenizer's ids (a model
    head wider than the tokenizer is cut). `forwards` / `tokens_read` count the work."""

    def __init__(self, model, vocabulary, keep: int = 64):
        self.model, self.vocabulary, self.keep = model, vocabulary, keep
        self._answers: OrderedDict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache = None
        self._cached: list[int] = []  # the tokens the cache holds
        self.forwards = self.tokens_read = 0

    def distribution(self, tokens: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        found = self._answers.get(tokens)
        if found is not None:
            self._answers.move_to_end(tokens)
            return found
        probabilities = self._run(list(tokens))
        found = (probabilities, self.vocabulary.cumulative(probabilities))
        self._answers[tokens] = found
        if len(self._answers) > self.keep:
            self._answers.popitem(last=False)
        return found

    @torch.inference_mode()
    def _run(self, tokens: list[int]) -> np.ndarray:
        from transformers import DynamicCache

        if not tokens:
            raise ValueError("a next-token distribution needs at least one token of context")
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
        shared = 0
        for a, b in zip(self._cached, tokens, strict=False):
            if a != b:
                break
            shared += 1
        keep = min(shared, len(tokens) - 1)  # the last token is read again for its logits
        if len(self._cached) > keep:
            try:
                self._cache.crop(keep - len(self._cached))  # negative: drop from the end
            except (ValueError, RuntimeError):  # a sliding-window layer past its window may refuse
                self._cache, keep = DynamicCache(config=self.model.config), 0
        new = tokens[keep:]
        device = self.model.device
        out = self.model(
            input_ids=torch.tensor([new], device=device),
            position_ids=torch.arange(keep, len(tokens), device=device)[None],
            **with_cache(self._cache),
            use_cache=True,
            logits_to_keep=1,
        )
        self._cached = list(tokens)
        self.forwards += 1
        self.tokens_read += len(new)
        logits = out.logits[0, -1].double()[: self.vocabulary.size]
        return torch.softmax(logits, dim=-1).cpu().numpy()
