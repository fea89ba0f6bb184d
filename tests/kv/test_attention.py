"""The scoring attention equals eager attention and hands policies the same weights."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("shared", [False, True], ids=["per-head", "shared"])
@pytest.mark.parametrize("mask_kind", ["none", "additive", "bool"])
def test_gathered_attention_equals_attention_over_exactly_the_selected_keys(mask_kind, shared):
    """The selection policies' decode step reads only the chosen keys: its output equals a
    softmax over exactly those keys (minus masked ones), head by head, written out here."""
    import math

    from tokensieve.kv.selection import gathered_attention

    generator = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, keys, dim, count = 2, 4, 2, 11, 8, 5
    query = torch.randn(batch, heads, 1, dim, generator=generator)
    key = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    value = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    keep = torch.zeros(batch, heads, 1, keys, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):  # a different choice per head, as TidalDecode makes
            keep[b, h, 0, torch.randperm(keys, generator=generator)[:count]] = True
    if shared:  # one choice for all heads, as TokenSelect makes (an expanded view)
        keep = keep[:, :1].expand(batch, heads, 1, keys)
    hidden = torch.zeros(batch, 1, 1, keys, dtype=torch.bool)
    hidden[0, 0, 0, 3] = hidden[1, 0, 0, 7] = True  # e.g. padding
    mask = {"none": None, "bool": ~hidden,
            "additive": torch.where(hidden, float("-inf"), 0.0)}[mask_kind]  # fmt: skip
    scaling = dim**-0.5
    output = gathered_attention(query, key, value, mask, scaling, keep)
    for b in range(batch):
        for h in range(heads):
            g = h // (heads // kv_heads)
            visible = [j for j in range(keys) if keep[b, h, 0, j]
                       and not (mask is not None and hidden[b, 0, 0, j])]  # fmt: skip
            logits = [scaling * float(query[b, h, 0] @ key[b, g, j]) for j in visible]
            top = max(logits)
            weights = [math.exp(x - top) for x in logits]
            expected = sum(w * value[b, g, j] for w, j in zip(weights, visible, strict=True))
            torch.testing.assert_close(output[b, h, 0], expected / sum(weights),
                                       rtol=1e-5, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("name", ["tokenselect", "tidaldecode"])
def test_selection_decodes_as_masked_full_attention(name, monkeypatch):
    """Gathering the selected keys gives the model the same logits as attending to the
    whole cache with every other key masked out (the earlier implementation)."""
    from tokensieve.attention import attend
    from tokensieve.kv import make_policy, selection
    from tokensieve.kv.testing import run_policy
    from tokensieve.models import tiny_model

    model, tokenizer = tiny_model(layers=4, seed=0)  # TidalDecode: a layer between two
    options = {"sparse_start": 1, "correction_layer": 3} if name == "tidaldecode" else {}
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    calls = []
    original = selection.gathered_attention

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(selection, "gathered_attention", counted)
    _, gathered = run_policy(model, ids, make_policy(name, budget=0.3, **options), steps=5)
    assert calls, "no decode step read a selection"

    def masked(query, key, value, mask, scaling, keep):
        if isinstance(keep, selection.Shared):  # TokenSelect: positions for every head
            row = torch.zeros(keep.indices.shape[0], key.shape[2], dtype=torch.bool)
            ok = keep.valid
            if ok is None:
                ok = torch.ones_like(keep.indices, dtype=torch.bool)
            row.scatter_(1, keep.indices[ok][None], True)
            keep = row[:, None, None, :].expand(-1, query.shape[1], 1, -1)
        return attend(query, key, value, mask, scaling, keep)[0]

    monkeypatch.setattr(selection, "gathered_attention", masked)
    _, reference = run_policy(model, ids, make_policy(name, budget=0.3, **options), steps=5)
    torch.testing.assert_close(gathered, reference, rtol=1e-5, atol=1e-5)
