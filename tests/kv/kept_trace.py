"""What each evicting policy keeps, forward by forward, on fixed inputs (tiny model).

`python tests/kv/kept_trace.py` wrote ``data/kept-before-in-place.json`` with the cache
as it was before the in-place eviction buffer (commit 5f09269: every step concatenated
the new token and gathered the kept slots into a new tensor). `test_in_place.py`
replays the same runs with today's cache and requires the same kept positions after
every forward, and the same greedy tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

GOLDEN = Path(__file__).parent / "data" / "kept-before-in-place.json"
EVICTING = ["streaming", "h2o", "keyformer", "sirllm", "snapkv", "tova", "random"]
SCENARIOS = {  # name -> (budget, chunk of the prompt per forward, pos_shift, extra options)
    "prefill-then-decode": (0.25, None, False, {}),
    "chunked": (24, 16, False, {}),
    "chunked-pos-shift": (24, 16, True, {}),
    "after-input": (0.25, None, False, {"timing": "after input"}),
}


def runs():
    for scenario, (_, _, pos_shift, extra) in SCENARIOS.items():
        for name in EVICTING:
            if extra and name != "sirllm":
                continue
            if pos_shift and name in ("snapkv", "sirllm"):
                continue  # snapkv compresses once; sirllm's timing has its own tests
            yield scenario, name


def trace(scenario: str, name: str, steps: int = 10) -> dict:
    """Kept positions per layer after every forward, and the greedy tokens. Attention
    rows are scored in one chunk per forward, as when the trace was recorded (Keyformer
    draws its noise chunk by chunk, so its stream depends on the chunking)."""
    from tokensieve.kv import attention

    chunk, attention.CHUNK = attention.CHUNK, 512
    try:
        return _trace(scenario, name, steps)
    finally:
        attention.CHUNK = chunk


def _trace(scenario: str, name: str, steps: int) -> dict:
    from tokensieve.kv import CompressedCache, compression, make_policy
    from tokensieve.kv.rotation import rope_frequencies
    from tokensieve.models import tiny_model, with_cache

    budget, chunk, pos_shift, extra = SCENARIOS[scenario]
    model, _ = tiny_model(layers=3, seed=7)
    generator = torch.Generator().manual_seed(3)
    ids = (3 + torch.randperm(model.config.vocab_size - 3, generator=generator))[None, :100]
    policy = make_policy(name, budget=budget, **extra)
    freqs = rope_frequencies(model) if pos_shift else None
    cache = CompressedCache(model.config, policy, pos_shift=freqs)
    kept, tokens = [], []

    def snapshot():
        kept.append([p.tolist() for p in cache.kept_positions()])

    with torch.no_grad(), compression(model, cache):
        pieces = [ids] if chunk is None else list(ids.split(chunk, dim=1))
        for piece in pieces:
            logits = model(input_ids=piece, **with_cache(cache), use_cache=True).logits
            snapshot()
        for _ in range(steps):
            token = logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(int(token))
            logits = model(input_ids=token, **with_cache(cache), use_cache=True).logits
            snapshot()
    return {"kept": kept, "tokens": tokens, "last_logits": logits[0, -1].tolist()}


if __name__ == "__main__":
    golden = {f"{scenario}/{name}": trace(scenario, name) for scenario, name in runs()}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, separators=(",", ":")))
    print(f"{len(golden)} runs -> {GOLDEN} ({GOLDEN.stat().st_size // 1024} KiB)")
