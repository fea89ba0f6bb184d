"""`check_policy`: the generic checks every KV policy must pass, for free.

As genlm-control ships tests for its potentials, a new policy gets these from one call
in its test: it reads a prompt and decodes a few tokens through the compressed cache,
then checks what any policy must guarantee, whatever it scores:

- the logits stay finite, and the cache reports every token it read as seen;
- each layer's kept positions per KV head are sorted, distinct and among those seen;
- an evicting policy holds its budget after each compression (once after the prompt
  for prefill-only policies), and keeps its sink; a selection policy evicts nothing;
- the same policy, built again, keeps the same positions and gives the same logits
  (seeds make it reproducible);
- with a budget that covers every token it changes nothing: the logits equal the
  uncompressed model's.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from transformers import DynamicCache

from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.policy import KVPolicy
from tokensieve.models import with_cache


def greedy_logits(model, ids: torch.Tensor, cache, steps: int) -> torch.Tensor:
    """``[steps + 1, vocab]``: the prompt's last row, then each greedy decode step's."""
    rows = []
    with torch.no_grad():
        out = model(input_ids=ids, **with_cache(cache), use_cache=True)
        rows.append(out.logits[0, -1])
        for _ in range(steps):
            token = rows[-1].argmax()[None, None]
            out = model(input_ids=token, **with_cache(cache), use_cache=True)
            rows.append(out.logits[0, -1])
    return torch.stack(rows)


def run_policy(model, ids: torch.Tensor, policy: KVPolicy, steps: int):
    """``(cache, logits)`` after reading `ids` ``[1, n]`` and decoding `steps` tokens."""
    cache = CompressedCache(model.config, policy)
    with compression(model, cache):
        logits = greedy_logits(model, ids, cache, steps)
    return cache, logits


def check_policy(policy: KVPolicy, model, ids: torch.Tensor, steps: int = 6) -> None:
    """Raise `AssertionError` naming the first guarantee `policy` breaks on `ids`."""
    fresh = copy.deepcopy(policy)  # before any run: seeded generators start over
    cache, logits = run_policy(model, ids, policy, steps)
    name = getattr(policy, "name", type(policy).__name__)
    seen = ids.shape[1] + steps
    assert torch.isfinite(logits).all(), f"{name}: non-finite logits"
    assert cache.get_seq_length() == seen, f"{name}: the cache lost count of the tokens read"
    _check_kept(name, policy, cache, seen, steps)
    again, logits_again = run_policy(model, ids, fresh, steps)
    assert torch.equal(logits, logits_again), f"{name}: two equal runs differ"
    for first, second in zip(cache.kept_positions(), again.kept_positions(), strict=True):
        assert torch.equal(first, second), f"{name}: two equal runs keep different tokens"
    if dataclasses.is_dataclass(policy):
        roomy = dataclasses.replace(fresh, budget=seen + 8)
        _, roomy_logits = run_policy(model, ids, roomy, steps)
        reference = greedy_logits(model, ids, DynamicCache(config=model.config), steps)
        message = f"{name}: a budget covering everything changed the logits"
        torch.testing.assert_close(roomy_logits, reference, rtol=1e-5, atol=1e-5, msg=message)


def _check_kept(name: str, policy: KVPolicy, cache, seen: int, steps: int) -> None:
    evicts = policy.compresses != "never"
    for layer, positions in enumerate(cache.kept_positions()):
        for head in positions.reshape(-1, positions.shape[-1]):
            kept = head.tolist()
            assert kept == sorted(set(kept)), f"{name}: layer {layer} keeps unsorted slots"
            assert kept[0] >= 0 and kept[-1] < seen, f"{name}: layer {layer} keeps unseen slots"
            if not evicts:
                assert len(kept) == seen, f"{name} compresses never, but evicted tokens"
                continue
            most = cache.budget + (0 if policy.compresses == "every step" else steps)
            assert len(kept) <= most, f"{name}: layer {layer} holds {len(kept)} > {most} slots"
            sink = min(policy.sink, cache.budget)
            assert set(range(sink)) <= set(kept), f"{name}: layer {layer} evicted its sink"
