"""The multi-turn evaluation: conversations built as promised, the harness's answers equal
greedy decoding over the whole conversation written here without a cache, and on the
embedded model a known answer found with the full cache and lost when the fact is evicted."""

from __future__ import annotations

import inspect
import textwrap

import pytest
import torch

from tokensieve.errors import UserError
from tokensieve.kv import make_policy
from tokensieve.kv.multiturn import make_conversation, run_conversation, turn_accuracy, turn_ids

TEXT = inspect.getsource(textwrap)


@pytest.fixture(scope="module")
def long_tiny():
    """A tiny model with room for a whole conversation (the shared one reads 256 tokens)."""
    from tokensieve.models import tiny_model

    model, tokenizer = tiny_model(max_positions=1024, seed=5)
    return model.double(), tokenizer


def test_conversations_alternate_facts_and_questions(tiny):
    _, tokenizer = tiny
    conversation = make_conversation(tokenizer, TEXT, turns=6, turn_tokens=80, seed=3)
    assert [t.key is None for t in conversation] == [True, False] * 3
    for i, turn in enumerate(conversation):
        if turn.key is None:
            assert turn.text.count("access code for the") == 1
            continue
        assert turn.asked == i - 1 and turn.key not in turn.text
        fact_turn = conversation[turn.asked].text
        thing = turn.text.rsplit("access code for the ", 1)[1].removesuffix(" is")
        assert f"access code for the {thing} is {turn.key}." in fact_turn
        assert all(turn.key not in other.text for j, other in enumerate(conversation) if j != i - 1)


def test_the_harness_answers_as_greedy_decoding_of_the_whole_conversation(long_tiny):
    """With the full cache, each asking turn's tokens equal argmax decoding by plain
    forwards over every earlier turn's input and answer, recomputed from scratch."""
    model, tokenizer = long_tiny
    conversation = make_conversation(tokenizer, TEXT, turns=4, turn_tokens=40, seed=1)
    answers = run_conversation(model, tokenizer, conversation, None, new_tokens=4).answers
    history: list[int] = []
    for turn, ids, produced in zip(conversation, turn_ids(tokenizer, conversation), answers,
                                   strict=True):  # fmt: skip
        history += ids
        if turn.key is None:
            assert produced is None
            continue
        expected = []
        for _ in range(4):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([history])).logits[0, -1]
            expected.append(int(logits.argmax()))
            history.append(expected[-1])
        assert produced == expected


def test_bad_conversations_are_refused(tiny):
    _, tokenizer = tiny
    for turns in (1, 25):  # 25: more facts than the 12 it has names for
        with pytest.raises(UserError, match="2 to 24 turns"):
            make_conversation(tokenizer, TEXT, turns=turns)
    with pytest.raises(UserError, match="need more"):
        make_conversation(tokenizer, "too short", turns=4, turn_tokens=64)


@pytest.mark.embedded
def test_the_full_cache_finds_a_known_answer_a_tiny_window_loses(embedded):
    model, tokenizer = embedded
    conversations = [make_conversation(tokenizer, TEXT, turns=2, turn_tokens=200, seed=s)
                     for s in range(3)]  # fmt: skip
    assert turn_accuracy(model, tokenizer, conversations, None) == {1: 1.0}
    window = make_policy("streaming", budget=48)  # the fact scrolls out of 48 tokens
    runs = []
    assert turn_accuracy(model, tokenizer, conversations, window, runs=runs) == {1: 0.0}
    assert all(run.peak_kept <= 48 + 200 for run in runs)  # an input enters, then evicts


def test_sirllm_stays_within_its_budget_through_a_conversation(long_tiny):
    """SirLLM as its authors run it makes room before each turn: no forward leaves more
    than the budget in the cache once the first turn has been read."""
    model, tokenizer = long_tiny
    conversation = make_conversation(tokenizer, TEXT, turns=6, turn_tokens=40, seed=2)
    policy = make_policy("sirllm", budget=160, reserve=8)
    run = run_conversation(model, tokenizer, conversation, policy)
    first = len(turn_ids(tokenizer, conversation)[0])
    assert run.budget == 160 and first <= 160 and run.peak_kept <= 160
    after = run_conversation(model, tokenizer, conversation,
                             make_policy("sirllm", budget=160, timing="after input"))  # fmt: skip
    assert after.peak_kept > 160  # reading an input, then evicting, passes the budget


def test_a_conversation_longer_than_the_window_is_refused(tiny):
    model, tokenizer = tiny  # reads 256 positions
    conversation = make_conversation(tokenizer, TEXT, turns=6, turn_tokens=60, seed=0)
    with pytest.raises(UserError, match="reads at most 256"):
        run_conversation(model, tokenizer, conversation, None)
