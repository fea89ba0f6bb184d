"""Passkey retrieval: a random 5-digit key hidden in real text, asked for at the end.

The prompt is a chat turn (haystack with the key sentence at a chosen depth, then the
question) whose answer is started for the model: "The secret passkey is". The case
counts as correct when the digits the model then produces greedily equal the key.
Two modes: "aware" reads the question with the context (a policy may keep what it will be
asked about); "agnostic" compresses the context alone and appends the question after.
Scoring the continuation instead of a free answer measures retrieval, not the small
model's verbosity (measured on the embedded model with the full cache: free answers
find the key in 3 of 6 cases at 1k tokens).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from tokensieve.errors import UserError
from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.policies import FullPolicy
from tokensieve.kv.policy import KVPolicy
from tokensieve.lm import check_context
from tokensieve.models import with_cache

QUESTION = "What is the secret passkey mentioned in the text above?"
ANSWER_START = "The secret passkey is"


MODES = ("aware", "agnostic")


@dataclass
class PasskeyCase:
    key: str
    depth: float
    ids: list[int]  # the whole prompt, answer start included
    split: int = 0  # ids[:split] is the context (chat start + haystack), the rest the question


def make_passkey_case(
    tokenizer, haystack: str, tokens: int, depth: float, seed: int
) -> PasskeyCase:
    """A prompt of about `tokens` tokens with the key sentence at `depth` in [0, 1]."""
    rng = random.Random(seed)
    key = f"{rng.randrange(10_000, 100_000)}"
    needle = f" The secret passkey is {key}. Remember it: {key}. "

    def rendered(before: str, after: str) -> tuple[str, int]:
        """The prompt text and the character where the question starts."""
        context = f"{before}{needle}{after}"
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{context}\n\n{QUESTION}"}], tokenize=False,
            add_generation_prompt=True,
        ) + ANSWER_START  # fmt: skip
        return text, text.index(f"\n\n{QUESTION}")

    def prompt_ids(before: str, after: str) -> list[int]:
        return tokenizer(rendered(before, after)[0], add_special_tokens=False)["input_ids"]

    words = tokenizer(haystack, add_special_tokens=False)["input_ids"]
    budget = max(16, tokens - len(prompt_ids("", "")))
    start = rng.randrange(0, max(1, len(words) - budget))
    filler = words[start : start + budget]
    cut = int(depth * len(filler))
    text, question = rendered(tokenizer.decode(filler[:cut]), tokenizer.decode(filler[cut:]))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    # The question starts at the first token that reaches past the haystack (a token that
    # straddles the boundary goes with the question: the context never sees it).
    split = next(i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > question)
    return PasskeyCase(key=key, depth=depth, ids=encoded["input_ids"], split=split)


@torch.no_grad()
def answer_digits(
    model,
    tokenizer,
    case: PasskeyCase,
    policy: KVPolicy | None,
    new_tokens: int = 8,
    mode: str = "aware",
    pos_shift: bool = False,
) -> str:
    """Greedy continuation of the case's prompt under `policy`; the digits it contains.

    ``mode="aware"``: the whole prompt, question included, is read (and compressed) at
    once, so a policy may see what will be asked. ``"agnostic"``: the context is read
    and compressed alone (the budget is a share of it), then the question and the answer
    start are appended to the compressed cache, as when a compressed context is reused
    (kvpress's pipeline). `pos_shift`: kept keys at their rank in the cache, the question
    and answer at the cache's length (`tokensieve.kv.rotation`; kvpress's pipeline does the
    same for its `KeyRerotationPress`)."""
    if mode not in MODES:
        raise UserError(f"unknown passkey mode {mode!r}; choose one of {', '.join(MODES)}")
    check_context(model, len(case.ids) + new_tokens)
    if pos_shift:
        produced = _rerotated_answer(model, case, policy, new_tokens, mode)
        return key_digits(tokenizer, produced, case.key)
    cache = CompressedCache(model.config, policy or FullPolicy())
    ids = torch.tensor([case.ids], device=model.device)
    with compression(model, cache):
        if mode == "agnostic":
            model(input_ids=ids[:, : case.split], **with_cache(cache), use_cache=True)
        output = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            **with_cache(cache),
            max_new_tokens=new_tokens,
            do_sample=False,
        )
    return key_digits(tokenizer, output[0, len(case.ids) :].tolist(), case.key)


def key_digits(tokenizer, tokens: list[int], key: str) -> str:
    """The digits of an answer, as many as the key has: what is compared with the key."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return re.sub(r"\D", "", text)[: len(key)]


def _rerotated_answer(model, case: PasskeyCase, policy, new_tokens: int, mode: str) -> list[int]:
    """Greedy answer with a rank-positioned cache. `model.generate` cannot drive one (it
    counts the tokens it has fed by the cache's length, which is the kept count here), so
    the loop is written out: read the prompt (context, then question when agnostic), then
    argmax one token at a time, stopping at an end token as `generate` does."""
    from tokensieve.kv.rotation import rope_frequencies

    cache = CompressedCache(model.config, policy or FullPolicy(), pos_shift=rope_frequencies(model))
    ends = model.generation_config.eos_token_id
    ends = set(ends if isinstance(ends, list) else [] if ends is None else [ends])
    split = case.split if mode == "agnostic" else len(case.ids)
    pieces = [case.ids[:split], case.ids[split:]]
    produced: list[int] = []
    with torch.no_grad(), compression(model, cache):
        for piece in pieces:
            if piece:
                out = model(input_ids=torch.tensor([piece], device=model.device),
                            **with_cache(cache), use_cache=True)  # fmt: skip
        while len(produced) < new_tokens:
            token = int(out.logits[0, -1].argmax())
            produced.append(token)
            if token in ends or len(produced) == new_tokens:
                break
            out = model(input_ids=torch.tensor([[token]], device=model.device),
                        **with_cache(cache), use_cache=True)  # fmt: skip
    return produced


def passkey_accuracy(
    model,
    tokenizer,
    cases: list[PasskeyCase],
    policy: KVPolicy | None,
    mode: str = "aware",
    pos_shift: bool = False,
):
    """Share of `cases` whose greedy digits equal the key, and the per-case answers."""
    answers = [answer_digits(model, tokenizer, case, policy, mode=mode, pos_shift=pos_shift)
               for case in cases]  # fmt: skip
    correct = [answer == case.key for answer, case in zip(answers, cases, strict=True)]
    return sum(correct) / max(len(cases), 1), answers
