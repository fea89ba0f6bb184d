"""Next-token distributions for many token sequences that share their beginnings.

The byte-level algorithm asks for ``p(· | context + L)`` for hypotheses ``L`` that differ
only in their last few tokens. One KV cache follows the questions: it is cut back to the
longest prefix it shares with the next sequence and only the new tokens are read, so a
byte costs one or a few single-token forwards, never a re-read of the context; the new
hypotheses of one byte are asked together, as the rows of one batch over that cache
(`prefetch`). Answers are kept (a bounded LRU), since the same ``L`` is asked about at
every byte of a token.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from tokensieve.lm import check_context
from tokensieve.models import with_cache

# positions past the model's window are refused, not silently extrapolated
CONTEXT_HINT = "shorten the text or the bytes asked for"


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
        return self._remember(tokens, self._run(list(tokens)))

    def _remember(self, tokens: tuple[int, ...], probabilities: np.ndarray):
        found = (probabilities, self.vocabulary.cumulative(probabilities))
        self._answers[tokens] = found
        if len(self._answers) > self.keep:
            self._answers.popitem(last=False)
        return found

    def prefetch(self, queries: list[tuple[int, ...]]) -> None:
        """Answer several sequences in one batched forward (the hypotheses of one byte
        differ in their last few tokens): their shared beginning is read once into the
        cache, the rest of each as one row of a batch on a view of that cache. On a CPU a
        batch of a few rows costs little more than one row."""
        missing = list(dict.fromkeys(q for q in queries if q not in self._answers))
        if len(missing) < 2 or not self._batchable():
            return
        shared = len(missing[0])
        for query in missing[1:]:
            shared = min(
                shared,
                next(
                    (i for i, (a, b) in enumerate(zip(missing[0], query, strict=False)) if a != b),
                    min(len(missing[0]), len(query)),
                ),
            )
        shared = min(shared, min(len(q) for q in missing) - 1)  # each row reads a token
        if shared < 1:
            return
        first = missing[0][: shared + 1]
        self._remember(first, self._run(list(first)))  # the cache now holds the trunk + 1
        if not self._batchable():
            return
        self._cache.crop(-1)
        self._cached = self._cached[:shared]
        for query, probabilities in zip(missing, self._batch(missing, shared), strict=True):
            self._remember(query, probabilities)

    def _batchable(self) -> bool:
        from transformers.cache_utils import DynamicLayer

        return self._cache is None or all(type(x) is DynamicLayer for x in self._cache.layers)

    @torch.inference_mode()
    def _batch(self, queries: list[tuple[int, ...]], shared: int) -> list[np.ndarray]:
        from transformers import DynamicCache

        rows = len(queries)
        rests = [list(q[shared:]) for q in queries]
        width = max(len(r) for r in rests)
        check_context(self.model, shared + width, CONTEXT_HINT)
        view = DynamicCache(config=self.model.config)
        for mine, theirs in zip(self._cache.layers, view.layers, strict=True):
            theirs.lazy_initialization(mine.keys, mine.values)
            theirs.keys = mine.keys.expand(rows, -1, -1, -1)  # no copy: the trunk is shared
            theirs.values = mine.values.expand(rows, -1, -1, -1)
        device = self.model.device
        # right padding: under the causal mask a real token never sees the padding after it
        ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rests], device=device)
        positions = torch.arange(shared, shared + width, device=device).expand(rows, -1)
        out = self.model(input_ids=ids, position_ids=positions, **with_cache(view), use_cache=True)
        self.forwards += 1
        self.tokens_read += sum(len(r) for r in rests)
        last = torch.tensor([len(r) - 1 for r in rests], device=device)
        logits = out.logits[torch.arange(rows, device=device), last].double()
        probabilities = torch.softmax(logits[:, : self.vocabulary.size], dim=-1).cpu().numpy()
        return list(probabilities)

    @torch.inference_mode()
    def _run(self, tokens: list[int]) -> np.ndarray:
        from transformers import DynamicCache

        if not tokens:
            raise ValueError("a next-token distribution needs at least one token of context")
        check_context(self.model, len(tokens), CONTEXT_HINT)
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
