"""Signals against slow, obviously-correct references on a tiny random model."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from tokensieve import UserError, forking_tokens, text_signals
from tokensieve.inspect.signals import TokenSignals, answer_signals, summarize
from tokensieve.lm import token_bytes
from tokensieve.scoring import next_token_stats

TEXT = (
    "Return a copy of the string with leading whitespace removed. "
    "If chars is given, remove characters in chars instead.\n\tNaïve café ☃ 日本語!"
)


def reference(model, ids: list[int]):
    """Full forward without cache or chunks, float64 maths, Python loops for attention."""
    with torch.no_grad():
        model.set_attn_implementation("eager")
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
        model.set_attn_implementation("sdpa")
    logits = out.logits[0].double()
    n = len(ids)
    rows = {k: [] for k in ("entropy", "surprisal", "top1_prob", "margin")}
    for p in range(n - 1):
        z = logits[p] - logits[p].max()
        probs = z.exp() / z.exp().sum()
        rows["entropy"].append(float(-(probs * probs.log()).sum()))
        rows["surprisal"].append(float(-probs[ids[p + 1]].log()))
        top = sorted(probs.tolist(), reverse=True)
        rows["top1_prob"].append(top[0])
        rows["margin"].append(top[0] - top[1])
    layers = [a[0].double() for a in out.attentions]  # each [heads, n, n]
    heads = layers[0].shape[0]
    total, received = [], []
    for j in range(1, n):
        s = 0.0
        for attention in layers:
            for h in range(heads):
                for q in range(j, n):
                    s += float(attention[h, q, j])
        total.append(s / (len(layers) * heads))
        received.append(s / (len(layers) * heads * (n - j)))
    rows["attention_total"], rows["attention_received"] = total, received
    return {k: np.array(v) for k, v in rows.items()}


def test_every_signal_matches_reference(tiny):
    model, tokenizer = tiny
    signals = text_signals(model, tokenizer, TEXT)
    ids = [tokenizer.bos_token_id] + signals.token_ids
    expected = reference(model, ids)
    for name, values in expected.items():
        np.testing.assert_allclose(signals[name], values, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.isclose(expected["attention_received"][-1] * 1, signals["attention_received"][-1])


@pytest.mark.parametrize("chunk_size", [1, 5, 16])
def test_chunking_does_not_change_signals(tiny, chunk_size):
    model, tokenizer = tiny
    whole = text_signals(model, tokenizer, TEXT, chunk_size=4096)
    chunked = text_signals(model, tokenizer, TEXT, chunk_size=chunk_size)
    # float32: one-token chunks sum attention in another order, and a fresh-clone CI run
    # saw a relative difference of 4.3e-5 on one of 119 values; a chunking bug (a lost or
    # repeated cache entry) moves values by orders of magnitude more than 1e-4
    for name in whole.values:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_attention_can_be_skipped_and_restores_implementation(tiny):
    model, tokenizer = tiny
    before = model.config._attn_implementation
    signals = text_signals(model, tokenizer, TEXT, attention=False)
    assert np.isnan(signals["attention_received"]).all()
    assert not np.isnan(signals["entropy"]).any()
    text_signals(model, tokenizer, TEXT)
    assert model.config._attn_implementation == before


def test_entropy_is_stable_for_extreme_logits():
    """A dominant logit gives entropy 0 and a finite surprisal, never NaN."""
    logits = torch.zeros(3, 50)
    logits[0, 7] = 1e4  # certain
    logits[1, :] = -1e30  # huge but equal: uniform
    logits[2, 3] = -1e4  # one impossible token
    stats = next_token_stats(logits, torch.tensor([7, 0, 3]))
    assert stats["entropy"][0] == 0 and stats["surprisal"][0] == 0
    assert stats["entropy"][1] == pytest.approx(math.log(50), rel=1e-6)
    assert stats["entropy"][2] == pytest.approx(math.log(49), rel=1e-6)
    assert stats["surprisal"][2] == pytest.approx(1e4 + math.log(49), rel=1e-6)
    assert torch.isfinite(torch.stack(list(stats.values()))).all()
    assert stats["margin"][1] == 0 and stats["top1_prob"][0] == 1


def test_byte_spans_reassemble_text(tiny):
    model, tokenizer = tiny
    signals = text_signals(model, tokenizer, TEXT)
    raw = TEXT.encode("utf-8")
    assert b"".join(raw[a:b] for a, b in signals.byte_spans) == raw
    assert signals.byte_spans[0][0] == 0 and signals.byte_spans[-1][1] == len(raw)
    assert all(a < b for a, b in signals.byte_spans)
    assert signals.meta["spans_exact"]


def test_token_bytes_of_split_multibyte_character(tiny):
    _, tokenizer = tiny
    ids = tokenizer("☃", add_special_tokens=False)["input_ids"]
    pieces = token_bytes(tokenizer, ids)
    assert b"".join(pieces) == "☃".encode()
    assert len(pieces) == len(ids)


def test_max_tokens_truncates_and_context_limit_is_enforced(tiny):
    model, tokenizer = tiny
    short = text_signals(model, tokenizer, TEXT, max_tokens=5)
    assert len(short) == 5
    long_text = TEXT * 20
    with pytest.raises(UserError, match="`max_tokens`"):
        text_signals(model, tokenizer, long_text)
    assert len(text_signals(model, tokenizer, long_text, max_tokens=255, attention=False)) == 255


def test_empty_text_is_a_user_error(tiny):
    model, tokenizer = tiny
    for text in ("", "  \n"):
        with pytest.raises(UserError, match="empty"):
            text_signals(model, tokenizer, text)


def _signals_with(entropy) -> TokenSignals:
    n = len(entropy)
    return TokenSignals(
        text="x" * n,
        token_ids=list(range(n)),
        pieces=["x"] * n,
        byte_spans=[(i, i + 1) for i in range(n)],
        values={"entropy": np.asarray(entropy, dtype=float)},
    )


@pytest.mark.parametrize("n", [1, 2, 7, 10, 11, 50, 99])
@pytest.mark.parametrize("rho", [0.01, 0.1, 0.2, 0.25, 0.5, 0.8, 1.0])
def test_forking_count_is_exactly_ceil_rho_n(n, rho):
    rng = np.random.default_rng(n)
    mask = forking_tokens(_signals_with(rng.random(n)), rho)
    assert mask.sum() == math.ceil(round(rho * n, 9))


def test_forking_selects_the_highest_entropies():
    entropy = np.array([0.1, 3.0, 0.2, 2.0, 0.0, 5.0, 1.0, 0.3, 0.4, 0.5])
    mask = forking_tokens(_signals_with(entropy), 0.2)
    assert np.flatnonzero(mask).tolist() == [1, 5]


def test_forking_ties_are_broken_by_position_with_exact_count():
    entropy = np.array([1.0, 2.0, 2.0, 2.0, 2.0, 0.5])
    mask = forking_tokens(_signals_with(entropy), 0.5)  # ceil(3) of four tied 2.0s
    assert np.flatnonzero(mask).tolist() == [1, 2, 3]
    assert forking_tokens(_signals_with(np.ones(10)), 0.2).tolist() == [True] * 2 + [False] * 8


def test_forking_ignores_undefined_entropy():
    mask = forking_tokens(_signals_with([np.nan, 1.0, 2.0, 3.0, 4.0]), 0.5)
    assert np.flatnonzero(mask).tolist() == [3, 4]


@pytest.mark.parametrize("rho", [0, -0.1, 1.01, 2])
def test_rho_outside_unit_interval_is_refused(rho):
    with pytest.raises(UserError, match="rho"):
        forking_tokens(_signals_with([1.0, 2.0]), rho)


def test_json_and_csv_hold_every_row(tiny):
    model, tokenizer = tiny
    signals = text_signals(model, tokenizer, TEXT).with_forking(0.2)
    data = json.loads(signals.to_json())
    assert len(data["tokens"]) == len(signals)
    assert data["tokens"][3]["entropy"] == pytest.approx(float(signals["entropy"][3]))
    assert sum(row["forking"] for row in data["tokens"]) == math.ceil(0.2 * len(signals) - 1e-9)
    rows = list(csv.DictReader(io.StringIO(signals.to_csv())))
    assert len(rows) == len(signals)
    assert [row["piece"] for row in rows] == signals.pieces  # newlines inside fields survive
    assert float(rows[3]["entropy"]) == pytest.approx(float(signals["entropy"][3]))


def test_answer_signals_are_reproducible_and_score_the_answer(tiny):
    model, tokenizer = tiny
    a = answer_signals(model, tokenizer, "What is 2 + 3?", 12, seed=3)
    b = answer_signals(model, tokenizer, "What is 2 + 3?", 12, seed=3)
    assert a.token_ids == b.token_ids
    assert 1 <= len(a) <= 12
    np.testing.assert_array_equal(a["entropy"], b["entropy"])
    # The answer's first token is scored from the prompt's last position.
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    expected = reference(model, prompt_ids + a.token_ids)
    np.testing.assert_allclose(
        a["entropy"], expected["entropy"][len(prompt_ids) - 1 :], rtol=1e-5, atol=1e-6
    )


def test_summary_figures(tiny):
    model, tokenizer = tiny
    signals = text_signals(model, tokenizer, TEXT)
    summary = summarize(signals, 0.2)
    entropy = signals["entropy"]
    assert summary["tokens"] == len(signals)
    assert summary["entropy_p80"] == pytest.approx(np.percentile(entropy, 80))
    assert summary["fraction_below_0.01"] == pytest.approx((entropy < 0.01).mean())
    assert summary["forking_count"] == math.ceil(0.2 * len(signals) - 1e-9)


@pytest.mark.embedded
def test_embedded_signals_on_real_text_match_full_forward(embedded):
    """Chunked signals on the real model equal one uncached forward pass."""
    from pydoc_data.topics import topics

    model, tokenizer = embedded
    text = topics["with"][:600]
    signals = text_signals(model, tokenizer, text, chunk_size=64, attention=False)
    ids = [tokenizer.bos_token_id] + signals.token_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    expected = next_token_stats(logits, torch.tensor(ids[1:]))
    for name, column in expected.items():
        np.testing.assert_allclose(signals[name], column.numpy(), rtol=1e-4, atol=1e-4)
    assert b"".join(text.encode()[a:b] for a, b in signals.byte_spans) == text.encode()
    # A well-formed English reference text: most tokens are predictable.
    assert np.median(signals["entropy"]) < 4.0
