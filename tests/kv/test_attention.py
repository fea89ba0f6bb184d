"""The scoring attention equals eager attention and hands policies the same weights."""

from __future__ import annotations

import torch

from tokensieve.kv import CompressedCache, H2OPolicy, SnapKVPolicy, compression
from tokensieve.kv import attention as kv_attention
from tokensieve.models import with_cache

TEXT = "Return a list of the words in the string, using sep as the delimiter string."


def eager_run(model, ids):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(input_ids=ids, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")


def scored_run(model, ids, policy):
    cache = CompressedCache(model.config, policy)
    with torch.no_grad(), compression(model, cache):
        out = model(input_ids=ids, **with_cache(cache), use_cache=True)
    return out, cache


def test_chunked_scoring_equals_eager(tiny, monkeypatch):
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    monkeypatch.setattr(kv_attention, "CHUNK", 3)  # many chunks, the last one partial
    reference = eager_run(model, ids)
    out, cache = scored_run(model, ids, H2OPolicy(budget=1.0))  # nothing evicted
    torch.testing.assert_close(out.logits, reference.logits, rtol=1e-4, atol=1e-5)
    kv_heads = model.config.num_key_value_heads
    for layer, weights in zip(cache.layers, reference.attentions, strict=True):
        batch, heads, n, _ = weights.shape
        expected = weights.reshape(batch, kv_heads, heads // kv_heads, n, n).sum(dim=(2, 3))
        torch.testing.assert_close(layer.scores, expected, rtol=1e-4, atol=1e-5)


def test_last_rows_only_equal_eager(tiny):
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    reference = eager_run(model, ids)
    seen = []
    policy = SnapKVPolicy(budget=1.0, window=4)
    original = policy.score

    def score(scores, what):
        seen.append(what.attention)
        return original(scores, what)

    policy.score = score
    out, _ = scored_run(model, ids, policy)
    torch.testing.assert_close(out.logits, reference.logits, rtol=1e-4, atol=1e-5)
    assert len(seen) == model.config.num_hidden_layers
    for attention, weights in zip(seen, reference.attentions, strict=True):
        torch.testing.assert_close(attention, weights[:, :, -4:], rtol=1e-4, atol=1e-5)
