"""SirLLM as its authors run it (``evict_for_space_token_entropy`` before each input):
the reference below replays the rule in plain Python from the model's own logits — before
an input of n tokens the cache is cut to budget - n - reserve slots (sinks + the highest
decayed self-information), every stored value decays once per input, a generated token
past the reserve evicts one slot — and the cache must keep exactly those positions, never
hold more than the budget, and never evict an input in its own turn."""

from __future__ import annotations

import inspect
import textwrap

import pytest
import torch

from tokensieve.errors import UserError
from tokensieve.kv import CompressedCache, SirLLMPolicy, compression
from tokensieve.kv.cache import read_in_chunks
from tokensieve.models import with_cache

BUDGET, SINK, RESERVE, DECAY = 30, 4, 6, 0.5


@pytest.fixture(scope="module")
def text_ids(tiny):
    _, tokenizer = tiny
    ids = tokenizer(inspect.getsource(textwrap), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids[:200])


def _keep(scores: dict[int, float], size: int) -> dict[int, float]:
    """Sinks (the first `SINK` kept slots) + the `size - SINK` highest scores."""
    positions = sorted(scores)
    if len(positions) <= size:
        return scores
    sinks = positions[:SINK]
    rest = sorted(positions[SINK:], key=lambda p: (-scores[p], p))[: size - SINK]
    return {p: scores[p] for p in sorted(sinks + rest)}


def test_sirllm_makes_room_before_each_input_and_never_passes_the_budget(tiny, text_ids):
    model, _ = tiny
    # the turns: an input, 12 generated tokens (teacher-forced), an input, 3 tokens, an input
    plan = [20, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 1, 1, 1, 8]
    policy = SirLLMPolicy(budget=BUDGET, sink=SINK, decay=DECAY, reserve=RESERVE)
    cache = CompressedCache(model.config, policy)
    expected: dict[int, float] = {}  # position -> score, the reference's cache
    previous_logits = None
    start = 0
    with torch.no_grad(), compression(model, cache):
        for new in plan:
            piece = text_ids[start : start + new]
            # the reference: make room first
            if expected:
                if new > 1:
                    expected = {p: v * DECAY for p, v in expected.items()}
                room = max(BUDGET - new - (RESERVE if new > 1 else 0), SINK)
                expected = _keep(expected, room)
            logits = model(input_ids=piece[None], **with_cache(cache), use_cache=True).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            values = [None] + [float(-logp[j - 1, piece[j]]) for j in range(1, new)]
            if previous_logits is None:
                values[0] = max(values[1:])
            else:
                values[0] = float(-torch.log_softmax(previous_logits.double(), -1)[piece[0]])
            expected.update({start + j: v for j, v in enumerate(values)})
            previous_logits = logits[-1]
            kept = cache.kept_positions()[0][0, 0].tolist()
            assert kept == sorted(expected), (start, new)
            assert set(range(start, start + new)) <= set(kept)  # the input is protected
            if start:  # after the first input, the cache stays within the budget
                assert all(layer.physical_length() <= BUDGET for layer in cache.layers)
            start += new
    assert cache.seen_tokens() == sum(plan)


def test_a_long_prompt_read_in_chunks_keeps_generation_within_the_budget(tiny, text_ids):
    """`kv generate`'s path: the prompt read as inputs that make room first, then the
    answer generated; the cache never holds more than the budget, at any forward."""
    model, tokenizer = tiny
    policy = SirLLMPolicy(budget=0.25, reserve=10)
    cache = CompressedCache(model.config, policy)
    sizes = []
    hook = model.register_forward_hook(
        lambda *_: sizes.append(max(layer.physical_length() for layer in cache.layers))
    )
    try:
        with torch.no_grad(), compression(model, cache):
            read_in_chunks(model, cache, text_ids[:-1].tolist())
            mask = torch.ones(1, len(text_ids), dtype=torch.long)
            model.generate(text_ids[None], attention_mask=mask, **with_cache(cache),
                           max_new_tokens=10, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    finally:
        hook.remove()
    assert cache.budget == 50 and len(sizes) > 10
    assert max(sizes) <= cache.budget
    assert cache.seen_tokens() == len(text_ids) + 9  # the last new token is not read back


def test_sirllm_options_are_checked():
    with pytest.raises(UserError, match="timing"):
        SirLLMPolicy(timing="during")
    with pytest.raises(UserError, match="reserve"):
        SirLLMPolicy(reserve=-1)


def test_a_budget_without_room_for_the_answer_is_refused(tiny, text_ids):
    model, _ = tiny
    cache = CompressedCache(model.config, SirLLMPolicy(budget=20, reserve=40))
    with pytest.raises(UserError, match="leaves no room"):
        read_in_chunks(model, cache, text_ids.tolist())
