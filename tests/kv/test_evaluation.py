"""Fidelity and passkey evaluation on the tiny model, against plain forward passes."""

from __future__ import annotations

import math

import pytest
import torch

from tokensieve.kv import H2OPolicy, KeyformerPolicy, StreamingPolicy
from tokensieve.kv.fidelity import kv_fidelity, teacher_forced_logits
from tokensieve.kv.passkey import make_passkey_case, passkey_accuracy

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
def test_embedded_full_cache_finds_the_passkey(embedded):
    """The ceiling the policies are measured against: the full cache retrieves the key."""
    from pydoc_data.topics import topics

    model, tokenizer = embedded
    haystack = "\n\n".join(topics[k] for k in sorted(topics))
    cases = [
        make_passkey_case(tokenizer, haystack, 600, d, s) for s, d in ((0, 0.5), (3, 0.2), (1, 0.8))
    ]
    accuracy, answers = passkey_accuracy(model, tokenizer, cases, None)
    assert accuracy >= 2 / 3, answers  # the model is small: one miss is tolerated
