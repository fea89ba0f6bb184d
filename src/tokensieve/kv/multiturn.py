"""A multi-turn conversation over a long context, read through one compressed cache.

SirLLM (Yao et al., 2024) is evaluated on conversations whose later turns depend on what
earlier turns said, with one cache carried across turns; tokensieve's version is built
from real text. Each turn is a user message holding a passage of documentation. Turns
alternate: a passage stating a fact ("the access code for the red archive is 48213"),
then a passage and a question about that fact, with the assistant's answer started for
the model ("The access code for the red archive is") so the greedy digits it produces can
be checked. The answer it generates stays in the cache, as a chat would keep it, and the
facts of earlier turns stay in the conversation as distractors. Accuracy is reported per
asking turn, so the cost of carrying a compressed cache through more turns shows. A
fractional budget is a share of the whole conversation's tokens.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import torch

from tokensieve.errors import UserError
from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.options import MAX_TURNS
from tokensieve.kv.passkey import key_digits
from tokensieve.kv.policies import FullPolicy
from tokensieve.kv.policy import KVPolicy
from tokensieve.lm import check_context
from tokensieve.models import with_cache

THINGS = ["red archive", "blue ledger", "green vault", "silver drawer", "amber folder",
          "violet crate", "golden locker", "black cabinet", "white chest", "orange safe",
          "grey binder", "copper box"]  # fmt: skip
assert 2 * len(THINGS) == MAX_TURNS  # a fact of its own for each pair of turns


@dataclass
class Turn:
    text: str  # the whole input of the turn, answer start included
    key: str | None = None  # the digits the answer must start with (None: no question)
    asked: int | None = None  # the turn whose fact is asked for


def make_conversation(
    tokenizer, text: str, turns: int = 6, turn_tokens: int = 300, seed: int = 0
) -> list[Turn]:
    """`turns` user messages of about `turn_tokens` tokens of `text` each (consecutive
    passages from a random start). Even turns plant a fact at a random point of their
    passage; odd turns ask for the fact of the turn before (their own passage plants
    none, so the answer is not the nearest code in sight)."""
    if not 2 <= turns <= MAX_TURNS:
        raise UserError(f"a conversation has 2 to {MAX_TURNS} turns, got {turns}")
    if turn_tokens < 32:
        raise UserError(f"turns need at least 32 tokens of text, got {turn_tokens}")
    rng = random.Random(seed)
    words = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(words) < turns * turn_tokens:
        raise UserError(f"the text has {len(words)} tokens; {turns} turns of {turn_tokens} "
                        "need more")  # fmt: skip
    start = rng.randrange(0, len(words) - turns * turn_tokens + 1)
    things = rng.sample(THINGS, (turns + 1) // 2)
    keys = [f"{rng.randrange(10_000, 100_000)}" for _ in things]
    out = []
    for i in range(turns):
        passage = words[start + i * turn_tokens : start + (i + 1) * turn_tokens]
        if i % 2 == 0:
            cut = rng.randrange(0, len(passage))
            fact = f" Note: the access code for the {things[i // 2]} is {keys[i // 2]}. "
            body = tokenizer.decode(passage[:cut]) + fact + tokenizer.decode(passage[cut:])
            out.append(Turn(f"USER: {body}\nASSISTANT: Noted.\n"))
        else:
            asked = things[i // 2]
            text_i = (f"USER: {tokenizer.decode(passage)}\nWhat is the access code for the "
                      f"{asked}?\nASSISTANT: The access code for the {asked} is")  # fmt: skip
            out.append(Turn(text_i, keys[i // 2], i - 1))
    return out


def turn_ids(tokenizer, conversation: list[Turn]) -> list[list[int]]:
    """Each turn's input tokens (turns after the first start on a new line)."""
    return [
        tokenizer(("" if i == 0 else "\n") + turn.text, add_special_tokens=False)["input_ids"]
        for i, turn in enumerate(conversation)
    ]


@dataclass
class ConversationRun:
    answers: list[list[int] | None]  # the tokens answered per turn (None: nothing asked)
    peak_kept: int  # the most slots a layer held after any forward
    budget: int | None  # the cache's budget in tokens (None: the full cache)


@torch.no_grad()
def run_conversation(
    model, tokenizer, conversation: list[Turn], policy: KVPolicy | None, new_tokens: int = 8
) -> ConversationRun:
    """The tokens the model answers at each turn, one cache across the turns; each turn's
    input is one forward, the answer greedy and kept in the cache."""
    inputs = turn_ids(tokenizer, conversation)
    total = sum(map(len, inputs)) + new_tokens * len(inputs)  # room for an answer a turn
    check_context(model, total, "use shorter or fewer turns")
    if policy is not None and isinstance(policy.budget, float):
        policy = dataclasses.replace(policy, budget=max(1, int(policy.budget * total)))
    cache = CompressedCache(model.config, policy or FullPolicy())
    answers: list[list[int] | None] = []
    peak = 0

    def forward(ids: list[int]):
        nonlocal peak
        out = model(input_ids=torch.tensor([ids], device=model.device), **with_cache(cache),
                    use_cache=True)  # fmt: skip
        peak = max(peak, max(layer.physical_length() for layer in cache.layers))
        return out

    with compression(model, cache):
        for turn, ids in zip(conversation, inputs, strict=True):
            out = forward(ids)
            if turn.key is None:
                answers.append(None)
                continue
            produced = []
            for _ in range(new_tokens):
                token = int(out.logits[0, -1].argmax())
                produced.append(token)
                out = forward([token])
            answers.append(produced)
    return ConversationRun(answers, peak, None if policy is None else cache.budget)


def turn_accuracy(
    model,
    tokenizer,
    conversations: list[list[Turn]],
    policy: KVPolicy | None,
    progress=False,
    runs: list[ConversationRun] | None = None,
) -> dict[int, float]:
    """Per turn index (the turns that ask), the share of conversations answered right;
    each conversation's run is appended to `runs` when given."""
    from tqdm.auto import tqdm

    right: dict[int, list[bool]] = {}
    name = policy.name if policy else "full"
    for conversation in tqdm(conversations, disable=not progress, desc=name, leave=False):
        run = run_conversation(model, tokenizer, conversation, policy)
        if runs is not None:
            runs.append(run)
        for i, (turn, produced) in enumerate(zip(conversation, run.answers, strict=True)):
            if turn.key is not None:
                right.setdefault(i, []).append(
                    key_digits(tokenizer, produced, turn.key) == turn.key
                )
    return {i: sum(v) / len(v) for i, v in right.items()}
