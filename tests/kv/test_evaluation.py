"""Fidelity and passkey evaluation on the tiny model, against plain forward passes."""

from __future__ import annotations

import math

import pytest
import torch

from tokensieve.kv import H2OPolicy, KeyformerPolicy, StreamingPolicy
from tokensieve.kv.fidelity import kv_fidelity, teacher_forced_logits
from tokensieve.kv.passkey import answer_digits, make_passkey_case, passkey_accuracy

TEXT = (
    "Return a copy of the string with leading whitespace removed. If chars is given and "
    "not None, remove characters in chars instead. The with statement is used to wrap "
    "the execution of a block with methods defined by a context manager."
)


@pytest.fixture(scope="module")
def ids(tiny):
    _, tokenizer = tiny
    return torch.tensor(tokenizer(TEXT, add_special_tokens=False)["input_ids"][:120])


def test_full_cache_logits_equal_one_forward_pass(tiny, ids):
    model, _ = tiny
    logits, cache = teacher_forced_logits(model, ids, 60)
    with torch.no_grad():
        expected = model(input_ids=ids[None]).logits[0, 59:-1]
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert cache.get_seq_length() == len(ids) - 1


def test_fidelity_metrics(tiny, ids):
    model, _ = tiny
    results = kv_fidelity(model, ids, 60, [H2OPolicy(budget=0.3), StreamingPolicy(budget=10_000)])
    full, h2o, everything = results
    assert full.policy == "full" and full.kl_to_full == 0 and full.top1_agreement == 1
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids[None]).logits[0, 59:-1].double(), -1)
    nll = -log_probs.gather(1, ids[60:, None])[:, 0].mean()
    assert full.perplexity == pytest.approx(math.exp(float(nll)), rel=1e-4)
    assert everything.kl_to_full < 1e-8 and everything.top1_agreement == 1
    assert h2o.kl_to_full > 0 and h2o.kv_bytes < full.kv_bytes
    assert h2o.kv_bytes == full.full_kv_bytes * math.floor(0.3 * 60) // (len(ids) - 1)


def test_passkey_case_places_the_key_at_its_depth(tiny):
    _, tokenizer = tiny
    haystack = TEXT * 30
    shallow = make_passkey_case(tokenizer, haystack, 200, 0.1, seed=1)
    deep = make_passkey_case(tokenizer, haystack, 200, 0.9, seed=1)
    assert shallow.key == deep.key and len(shallow.key) == 5
    for case in (shallow, deep):
        text = tokenizer.decode(case.ids)
        assert text.count(case.key) == 2 and text.endswith("The secret passkey is")
        assert abs(len(case.ids) - 200) < 30
    position = tokenizer.decode(shallow.ids).index(shallow.key)
    assert position < tokenizer.decode(deep.ids).index(deep.key)
    assert make_passkey_case(tokenizer, haystack, 200, 0.5, seed=2).key != shallow.key


def test_passkey_accuracy_runs_with_any_policy(tiny):
    model, tokenizer = tiny
    cases = [make_passkey_case(tokenizer, TEXT * 30, 150, d, s) for s, d in enumerate((0.2, 0.8))]
    for policy in (None, KeyformerPolicy(budget=0.25, max_new_tokens=8)):
        accuracy, answers = passkey_accuracy(model, tokenizer, cases, policy)
        assert 0.0 <= accuracy <= 1.0 and len(answers) == 2


@pytest.mark.embedded
@pytest.mark.parametrize("mode", ["aware", "agnostic"])
def test_embedded_full_cache_finds_the_passkey(embedded, mode):
    """The ceiling the policies are measured against: the full cache retrieves the key,
    with the question read alongside the context and asked only afterwards alike."""
    from pydoc_data.topics import topics

    model, tokenizer = embedded
    haystack = "\n\n".join(topics[k] for k in sorted(topics))
    cases = [
        make_passkey_case(tokenizer, haystack, 600, d, s) for s, d in ((0, 0.5), (3, 0.2), (1, 0.8))
    ]
    accuracy, answers = passkey_accuracy(model, tokenizer, cases, None, mode=mode)
    assert accuracy >= 2 / 3, answers  # the model is small: one miss is tolerated


def test_agnostic_passkey_compresses_the_context_before_the_question_exists(tiny, monkeypatch):
    """Query-agnostic mode: the first forward reads exactly the context (chat start and
    haystack, no question token), the budget is a share of it, and the question comes
    after, on the compressed cache."""
    from tokensieve.kv import attention
    from tokensieve.kv.policies import H2OPolicy

    monkeypatch.setattr(attention, "CHUNK", 4096)  # one chunk of rows per forward
    model, tokenizer = tiny
    case = make_passkey_case(tokenizer, TEXT * 30, 150, 0.5, seed=0)
    question = tokenizer.decode(case.ids[case.split :])
    assert question.lstrip().startswith("What is the secret passkey")
    assert "What" not in tokenizer.decode(case.ids[: case.split])
    lengths, budgets = [], []

    class Recording(H2OPolicy):
        def score(self, scores, seen):
            if seen.layer == 0:
                lengths.append(seen.attention.shape[2])
            return super().score(scores, seen)

        def resolve_budget(self, prompt_length):
            budgets.append(prompt_length)
            return super().resolve_budget(prompt_length)

    answer_digits(model, tokenizer, case, Recording(budget=0.25), mode="agnostic")
    assert lengths[0] == case.split and lengths[1] == len(case.ids) - case.split
    assert budgets == [case.split]
    lengths.clear()
    budgets.clear()
    answer_digits(model, tokenizer, case, Recording(budget=0.25), mode="aware")
    assert lengths[0] == len(case.ids) and budgets == [len(case.ids)]


def test_both_modes_agree_with_the_full_cache(tiny):
    model, tokenizer = tiny
    cases = [make_passkey_case(tokenizer, TEXT * 30, 150, d, s) for s, d in enumerate((0.2, 0.8))]
    for case in cases:
        aware = answer_digits(model, tokenizer, case, None, mode="aware")
        assert answer_digits(model, tokenizer, case, None, mode="agnostic") == aware
    with pytest.raises(ValueError, match="passkey mode"):
        answer_digits(model, tokenizer, cases[0], None, mode="sideways")
