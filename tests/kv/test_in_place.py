"""The in-place eviction buffer: the same kept tokens as the copying cache it replaced,
forward by forward, and no copy of the cache in the decode loop."""

from __future__ import annotations

import json

import pytest
import torch

from tests.kv.kept_trace import GOLDEN, runs, trace

BEFORE = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize(("scenario", "name"), list(runs()))
def test_each_policy_keeps_what_it_kept_before_the_in_place_buffer(scenario, name):
    """Kept positions per layer and head after every forward, the greedy tokens and the
    last logits equal a trace of the copying cache (commit 5f09269) on the same inputs:
    a prompt then decode steps, a prompt read in chunks (with and without re-rotation),
    SirLLM after each input."""
    now, before = trace(scenario, name), BEFORE[f"{scenario}/{name}"]
    assert now["kept"] == before["kept"]
    assert now["tokens"] == before["tokens"]
    last_now, last_before = torch.tensor(now["last_logits"]), torch.tensor(before["last_logits"])
    torch.testing.assert_close(last_now, last_before, rtol=1e-4, atol=1e-4)


def test_decoding_overwrites_slots_instead_of_copying(tiny):
    """After the prompt is compressed, decode steps write into the same buffer (its
    storage never changes) and slots leave position order; the kept set is what a
    sorted cache keeps, and the buffer holds the budget plus a small slack."""
    from tokensieve.kv import CompressedCache, compression, make_policy
    from tokensieve.kv.cache import SLACK
    from tokensieve.models import with_cache

    model, _ = tiny
    ids = torch.arange(3, 83)[None]
    cache = CompressedCache(model.config, make_policy("h2o", budget=20))
    with torch.no_grad(), compression(model, cache):
        logits = model(input_ids=ids, **with_cache(cache)).logits
        layer = cache.layers[0]
        storage = layer._keys.untyped_storage().data_ptr()
        assert layer._keys.shape[2] <= 20 + SLACK
        for _ in range(12):
            token = logits[:, -1].argmax(-1, keepdim=True)
            logits = model(input_ids=token, **with_cache(cache)).logits
            assert layer._keys.untyped_storage().data_ptr() == storage
            assert layer.length == 20
    assert not layer.in_order  # slots were overwritten out of order
    assert cache.kv_bytes() == sum(layer.keys.numel() * 2 * 4 for layer in cache.layers)


def test_a_reset_cache_runs_as_a_new_one(tiny):
    """`reset` empties every layer (slots, positions, scores) and starts the budget and
    the policy's state over, so a second run through the same cache equals the first."""
    from tokensieve.kv import CompressedCache, compression, make_policy
    from tokensieve.kv.testing import greedy_logits

    model, _ = tiny
    ids = torch.arange(3, 63)[None]
    cache = CompressedCache(model.config, make_policy("h2o", budget=16))
    with compression(model, cache):
        first = greedy_logits(model, ids, cache, 6)
    cache.reset()
    with compression(model, cache):
        again = greedy_logits(model, ids, cache, 6)
    assert torch.equal(first, again)
