"""Prompt lookup (Saxena 2023, apoorvumang/prompt-lookup-decoding; transformers'
``prompt_lookup_num_tokens``): the simplest drafter, a single branch copied from the text.

The last `max_ngram` tokens (then fewer, down to 1) are searched for in the prompt and the
output so far; the first (leftmost) occurrence that has tokens after it proposes up to
`tree_size` of them (transformers' ``prompt_lookup_num_tokens``). That is the rule of
transformers' `PromptLookupCandidateGenerator`, so the two propose the same drafts, except
that transformers also cuts a proposal at the end token and applies its logits
processors' bans (neither changes what verification commits, only the draft); with
no match the step is a plain one, so the method costs nothing when the text does not
repeat itself.
"""

from __future__ import annotations

from tokensieve.errors import UserError
from tokensieve.speculate.tree import Draft


class PromptLookup:
    name = "prompt-lookup"
    prompt_logits = 0  # learns nothing from logits

    def __init__(self, tree_size: int = 10, max_ngram: int = 2):
        if tree_size < 1 or max_ngram < 1:
            raise UserError("`tree_size` and `max_ngram` must be at least 1")
        self.num_tokens, self.max_ngram = tree_size, max_ngram
        self.max_nodes = self.max_depth = tree_size

    def start(self, prompt_ids, prompt_logits) -> None:
        pass

    def draft(self, context: list[int]) -> Draft:
        n = len(context)
        for size in range(min(self.max_ngram, n - 1), 0, -1):
            suffix = context[n - size :]
            for start in range(n - size):  # leftmost first; the suffix itself has no follower
                if context[start : start + size] == suffix:
                    follow = context[start + size : start + size + self.num_tokens]
                    return Draft.chain(context[-1], follow)
        return Draft.chain(context[-1], [])

    def observe(self, draft, logits) -> None:
        pass
