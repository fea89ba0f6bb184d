"""The one extension point of speculative decoding: where guesses come from.

A drafter proposes a tree of guesses rooted at the last committed token and learns from
what each verification forward computed. Verification, acceptance and the cache belong
to `tokensieve.speculate.decode`, so a drafter never touches the model: a new method is
one class with three methods.
"""

from __future__ import annotations

from typing import Protocol

import torch

from tokensieve.speculate.tree import Draft


class Drafter(Protocol):
    name: str
    max_nodes: int  # the most draft nodes a tree may have (root excluded)
    max_depth: int  # the deepest a tree may go (root = depth 0)
    prompt_logits: int  # how many of the prompt's last positions' logits `start` reads

    def start(self, prompt_ids: list[int], prompt_logits: torch.Tensor) -> None:
        """A generation begins: the prompt and the ``[m, vocab]`` logits of its last m
        positions (m = `prompt_logits`, at least 1, at most the prompt's length)."""

    def draft(self, context: list[int]) -> Draft:
        """Guesses for what follows `context` (prompt + committed tokens), rooted at
        ``context[-1]``; a draft of the root alone means a plain decoding step."""

    def observe(self, draft: Draft, logits: torch.Tensor) -> None:
        """The forward that verified `draft`: ``[draft.query_tokens, vocab]`` float32
        logits; row i < len(draft) the next-token logits after the path to tree node i
        (rejected nodes included), the rows after them the side tokens' (if any)."""
