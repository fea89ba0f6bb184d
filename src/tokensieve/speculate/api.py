"""The Python entry points: speculate on a prompt, and plain greedy decoding to compare."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tokensieve.lm import chat_prompt_ids, end_of_turn_ids
from tokensieve.speculate import DRAFTERS
from tokensieve.speculate.decode import SpeculationResult, check_tree_fits, speculative_generate


def prompt_ids(tokenizer, prompt: str, chat: bool = True) -> list[int]:
    """The prompt as the model reads it: a one-turn chat, or the raw text."""
    if chat:
        return chat_prompt_ids(tokenizer, prompt)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def speculate(
    model,
    tokenizer,
    prompt: str,
    method: str = "recycling",
    max_new_tokens: int = 128,
    chat: bool = True,
    progress: bool = False,
    drafter=None,
    **options,
) -> SpeculationResult:
    """Greedy answer to `prompt`, drafted by `method` (a `DRAFTERS` name, built with
    `options`, e.g. ``tree_size=16``) or by a given `drafter` (keep one to reuse what it
    learnt: Token Recycling's matrix, Lookahead's trie)."""
    drafter = drafter if drafter is not None else DRAFTERS.build(method, **options)
    ids = prompt_ids(tokenizer, prompt, chat)
    return speculative_generate(
        model, ids, drafter, max_new_tokens, end_of_turn_ids(tokenizer), progress=progress
    )


@dataclass
class GreedyResult:
    tokens: list[int]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("nan")


@torch.inference_mode()
def plain_greedy(model, ids: list[int], max_new_tokens: int, eos_token_ids, **generate_options):
    """transformers' `generate(do_sample=False)`: the reference output and speed.
    `generate_options` reach `generate` (``prompt_lookup_num_tokens=10``, say)."""
    started = time.perf_counter()
    output = model.generate(
        torch.tensor([ids], device=model.device),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(eos_token_ids) or None,
        pad_token_id=(list(eos_token_ids) or [0])[0],
        **generate_options,
    )
    seconds = time.perf_counter() - started
    return GreedyResult(output[0, len(ids) :].tolist(), seconds)


__all__ = ["GreedyResult", "check_tree_fits", "plain_greedy", "prompt_ids", "speculate"]
