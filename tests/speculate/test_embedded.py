"""Lossless on the embedded SmolLM2-135M (float32): every method's answer equals
`model.generate(do_sample=False)` token for token on several prompts of 64+ tokens."""

from __future__ import annotations

import pytest
import torch

from tokensieve.lm import chat_prompt_ids, end_of_turn_ids
from tokensieve.speculate import DRAFTERS, speculative_generate
from tokensieve.speculate.api import plain_greedy

pytestmark = pytest.mark.embedded

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "A baker makes 24 muffins and sells them in boxes of 4. Each box costs 3 dollars. "
    "How much money does she make? Think step by step.",
    "Explain what the Python `with` statement does, with an example.",
]


def _near_tie(model, ids: list[int], reference: list[int], at: int) -> float:
    """Gap between the top two logits where greedy chose reference[at]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + reference[:at]])).logits[0, -1]
    top = logits.float().topk(2).values
    return float(top[0] - top[1])


@pytest.mark.parametrize("method", list(DRAFTERS))
def test_embedded_answers_equal_greedy_generate(embedded, method):
    model, tokenizer = embedded
    eos = end_of_turn_ids(tokenizer)
    drafter = DRAFTERS.build(method)
    for prompt in PROMPTS:
        ids = chat_prompt_ids(tokenizer, prompt)
        reference = plain_greedy(model, ids, 72, eos).tokens
        assert len(reference) >= 64, "the test wants answers of 64+ tokens"
        result = speculative_generate(model, ids, drafter, 72, eos)
        if result.tokens != reference:  # only a floating-point near-tie may explain it
            pairs = enumerate(zip(result.tokens, reference, strict=False))
            at = next(i for i, (a, b) in pairs if a != b)
            gap = _near_tie(model, ids, reference, at)
            pytest.fail(f"{method} diverged at token {at} (top-2 logit gap {gap:.2e})")
        assert result.accepted_per_forward > 1.0
