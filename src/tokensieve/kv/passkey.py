"""Passkey retrieval: a random 5-digit key hidden in real text, asked for at the end.

The prompt is a chat turn (haystack with the key sentence at a chosen depth, then the
question) whose answer is started for the model: "The secret passkey is". The case
counts as correct when the digits the model then produces greedily equal the key.
Scoring the continuation instead of a free answer measures retrieval, not the small
model's verbosity (measured on the embedded model with the full cache: free answers
find the key in 3 of 6 cases at 1k tokens).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.policies import FullPolicy
from tokensieve.kv.policy import KVPolicy
from tokensieve.lm import check_context
from tokensieve.models import with_cache

QUESTION = "What is the secret passkey mentioned in the text above?"
ANSWER_START = "The secret passkey is"


@dataclass
class PasskeyCase:
    key: str
    depth: float
    ids: list[int]  # the whole prompt, answer start included


def make_passkey_case(
    tokenizer, haystack: str, tokens: int, depth: float, seed: int
) -> PasskeyCase:
    """A prompt of about `tokens` tokens with the key sentence at `depth` in [0, 1]."""
    rng = random.Random(seed)
    key = f"{rng.randrange(10_000, 100_000)}"
    needle = f" The secret passkey is {key}. Remember it: {key}. "

    def prompt_ids(before: str, after: str) -> list[int]:
        text = f"{before}{needle}{after}\n\n{QUESTION}"
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(rendered + ANSWER_START, add_special_tokens=False)["input_ids"]

    words = tokenizer(haystack, add_special_tokens=False)["input_ids"]
    budget = max(16, tokens - len(prompt_ids("", "")))
    start = rng.randrange(0, max(1, len(words) - budget))
    filler = words[start : start + budget]
    cut = int(depth * len(filler))
    ids = prompt_ids(tokenizer.decode(filler[:cut]), tokenizer.decode(filler[cut:]))
    return PasskeyCase(key=key, depth=depth, ids=ids)


@torch.no_grad()
def answer_digits(
    model, tokenizer, case: PasskeyCase, policy: KVPolicy | None, new_tokens: int = 8
) -> str:
    """Greedy continuation of the case's prompt under `policy`; the digits it contains."""
    check_context(model, len(case.ids) + new_tokens)
    cache = CompressedCache(model.config, policy or FullPolicy())
    ids = torch.tensor([case.ids], device=model.device)
    with compression(model, cache):
        output = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            **with_cache(cache),
            max_new_tokens=new_tokens,
            do_sample=False,
        )
    text = tokenizer.decode(output[0, len(case.ids) :], skip_special_tokens=True)
    return re.sub(r"\D", "", text)[: len(case.key)]


def passkey_accuracy(model, tokenizer, cases: list[PasskeyCase], policy: KVPolicy | None):
    """Share of `cases` whose greedy digits equal the key, and the per-case answers."""
    answers = [answer_digits(model, tokenizer, case, policy) for case in cases]
    correct = [answer == case.key for answer, case in zip(answers, cases, strict=True)]
    return sum(correct) / max(len(cases), 1), answers
