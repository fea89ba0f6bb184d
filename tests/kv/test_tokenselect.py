"""TokenSelect as its reference runs it, against a reference written here from the
definition (pzs19/TokenSelect, ``patcher/token_retrieval.py``): content-only criticality
(keys without RoPE, the query rotated at position `local`), per-head softmax and a vote
summed over heads, the selection cache, and the chunked sparse prefill.

The reference attention below is registered with transformers and run on a plain
`DynamicCache`; it rotates with its own RoPE (pairs of coordinates i, i + d/2 turned by
position × θ^(-2i/d)), in float64, and attends row by row over the visible keys."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from tokensieve import UserError
from tokensieve.kv import CompressedCache, TokenSelectPolicy, compression
from tokensieve.models import tiny_model, with_cache

REFERENCE = "test_tokenselect_reference"


def turn(x: torch.Tensor, position: float, theta: float) -> torch.Tensor:
    """RoPE by hand: `x` ``[..., d]`` turned to `position` (negative turns back)."""
    x = x.double()
    half = x.shape[-1] // 2
    angle = position * theta ** (-torch.arange(half, dtype=torch.double) * 2 / x.shape[-1])
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * angle.cos() - second * angle.sin(),
                      first * angle.sin() + second * angle.cos()], dim=-1)  # fmt: skip


class Reference:
    """TokenSelect from the definition: one object per run (it holds the selection cache)."""

    def __init__(self, sink, local, top_k, theta, chunk=None, threshold=None):
        self.sink, self.local, self.top_k, self.theta = sink, local, top_k, theta
        self.chunk, self.threshold = chunk, threshold
        self.memory = {}  # layer -> (fingerprint, chosen) of the last computed selection
        self.seen = []  # (layer, rows, visible positions or None: all) per selection asked
        self.reused = 0

    def visible(self, layer, query, key, rows_at):
        """Positions a group of query rows (at positions `rows_at`) may see, before
        causality; None: all."""
        allowed = self._visible(layer, query, key, rows_at)
        self.seen.append((layer, len(rows_at), allowed))
        return allowed

    def _visible(self, layer, query, key, rows_at):
        seen = rows_at[-1] + 1
        local = max(self.local, len(rows_at))
        if self.sink + self.top_k + local >= seen:
            return None
        heads, kv_heads, dim = query.shape[0], key.shape[0], query.shape[-1]
        group = heads // kv_heads
        content = torch.stack([torch.stack([turn(key[g, j], -j, self.theta) for j in range(seen)])
                               for g in range(kv_heads)])  # fmt: skip
        fingerprint = torch.zeros(heads, dim, dtype=torch.double)
        for j, at in enumerate(rows_at):
            for h in range(heads):
                fingerprint[h] += turn(turn(query[h, j], -at, self.theta), self.local + j,
                                       self.theta) / len(rows_at)  # fmt: skip
        memory = self.memory.get(layer)
        if memory is not None and self.threshold is not None:
            a, b = fingerprint.flatten(), memory[0].flatten()
            if float(a @ b / (a.norm() * b.norm())) >= self.threshold:
                self.reused += 1
                chosen = memory[1]
                return set(range(self.sink)) | chosen | set(range(seen - local, seen))
        candidates = list(range(self.sink, seen - local))
        votes = {j: 0.0 for j in candidates}
        for h in range(heads):
            raw = [float(fingerprint[h] @ content[h // group, j]) for j in candidates]
            top = max(raw)
            total = sum(math.exp(v - top) for v in raw)
            for j, v in zip(candidates, raw, strict=True):
                votes[j] += math.exp(v - top) / total
        chosen = set(sorted(candidates, key=lambda j: -votes[j])[: self.top_k])
        self.memory[layer] = (fingerprint, chosen)
        return set(range(self.sink)) | chosen | set(range(seen - local, seen))

    def attention(self, module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        query, key, value = query[0], key[0], value[0]  # batch of one
        heads, rows, dim = query.shape
        group = heads // key.shape[0]
        keys = key.shape[1]
        first = keys - rows  # position of the first query row
        sparse = rows == 1 or self.chunk is not None
        size = 1 if rows == 1 else (self.chunk or rows)
        output = torch.zeros(heads, rows, dim, dtype=torch.double)
        for start in range(0, rows, size):
            rows_at = list(range(first + start, first + min(start + size, rows)))
            allowed = (
                self.visible(module.layer_idx, query[:, start:], key, rows_at) if sparse else None
            )
            for i, at in enumerate(rows_at):
                see = [j for j in range(at + 1) if allowed is None or j in allowed]
                for h in range(heads):
                    row, g = query[h, start + i].double(), h // group
                    logits = [scaling * float(row @ key[g, j].double()) for j in see]
                    top = max(logits)
                    weights = [math.exp(x - top) for x in logits]
                    mixed = sum(
                        w * value[h // group, j].double() for w, j in zip(weights, see, strict=True)
                    )
                    output[h, start + i] = mixed / sum(weights)
        return output.to(query.dtype).transpose(0, 1)[None].contiguous(), None


def run_reference(model, ids, reference, steps):
    """Prefill and greedy decode through the reference attention; logits per step."""
    AttentionInterface.register(REFERENCE, reference.attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(REFERENCE, eager_mask)
    previous = model.config._attn_implementation
    model.set_attn_implementation(REFERENCE)
    try:
        return decode(model, ids, DynamicCache(config=model.config), steps)
    finally:
        model.set_attn_implementation(previous)


def decode(model, ids, cache, steps):
    rows, step = [], ids
    with torch.no_grad():
        for _ in range(steps + 1):
            logits = model(input_ids=step, **with_cache(cache), use_cache=True).logits[:, -1]
            rows.append(logits[0])
            step = logits.argmax(-1, keepdim=True)
    return torch.stack(rows)


def run_policy(model, ids, policy, steps):
    cache = CompressedCache(model.config, policy)
    with compression(model, cache):
        logits = decode(model, ids, cache, steps)
    return logits, cache


def theta_of(model) -> float:
    parameters = getattr(model.config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(model.config, "rope_theta", 10000.0)))


@pytest.fixture(scope="module")
def setup():
    model, _ = tiny_model(layers=3, seed=5)
    # distinct tokens: in the first layer a key's content is its token's, so a repeated
    # token would tie exactly with itself and the top-k could break the tie either way
    ids = 3 + torch.randperm(
        model.config.vocab_size - 3, generator=torch.Generator().manual_seed(1)
    )
    return model, ids[None, :90]


def record(policy):
    """The positions each `select` call chose (None: all), in call order."""
    calls = []
    original = policy.select

    def select(module, query, key, cache):
        keep = original(module, query, key, cache)
        if keep is None:
            row = None
        else:  # a Shared choice: the positions that count
            valid = keep.valid[0] if keep.valid is not None else [True] * keep.indices.shape[-1]
            row = {int(i) for i, ok in zip(keep.indices[0], valid, strict=True) if ok}
        calls.append((module.layer_idx, query.shape[2], row))
        return keep

    object.__setattr__(policy, "select", select)
    return calls


def test_decode_selects_by_content_and_attends_only_there(setup):
    """Prefill full, then every decode step of every layer: the same chosen keys as the
    reference, and the same logits (so attention read exactly those keys)."""
    model, ids = setup
    policy = TokenSelectPolicy(budget=24, sink=2, recent=4)  # top-k 18
    calls = record(policy)
    logits, cache = run_policy(model, ids, policy, steps=6)
    reference = Reference(sink=2, local=4, top_k=18, theta=theta_of(model))
    expected = run_reference(model, ids, reference, steps=6)
    assert [c for c in calls if c[2] is not None], "no decode step selected"
    assert calls == reference.seen  # layer, one row, the visible keys: step by step
    torch.testing.assert_close(logits, expected.float(), rtol=1e-4, atol=1e-4)
    assert cache.policy_state.computed == 6 * 3 and cache.policy_state.reused == 0


def test_selection_cache_reuses_while_the_query_stays_close(setup):
    """With a reuse threshold a layer keeps its last computed top-k while the cosine of
    the fixed-position query to the one that computed it stays at or above it (sink and
    local window always current): the same choices and logits as the reference."""
    model, ids = setup
    policy = TokenSelectPolicy(budget=24, sink=2, recent=4, reuse_threshold=0.1)
    calls = record(policy)
    logits, cache = run_policy(model, ids, policy, steps=8)
    reference = Reference(sink=2, local=4, top_k=18, theta=theta_of(model), threshold=0.1)
    expected = run_reference(model, ids, reference, steps=8)
    assert calls == reference.seen
    torch.testing.assert_close(logits, expected.float(), rtol=1e-4, atol=1e-4)
    state = cache.policy_state
    assert (state.computed, state.reused) == (8 * 3 - reference.reused, reference.reused)
    assert 0 < state.reused < 8 * 3  # both branches ran


def test_threshold_one_reuses_only_an_identical_query(setup):
    model, ids = setup
    _, cache = run_policy(model, ids, TokenSelectPolicy(budget=24, sink=2, recent=4,
                                                         reuse_threshold=1.0), steps=4)  # fmt: skip
    assert (cache.policy_state.computed, cache.policy_state.reused) == (4 * 3, 0)


@pytest.mark.parametrize("threshold", [None, 0.1])
def test_sparse_prefill_selects_per_chunk(setup, threshold):
    """``prefill="sparse"``: the prompt in chunks of 16 rows, each choosing once from the
    mean of its queries rotated at local + j, attending causally to its choice; then
    decoding. Every chunk's and step's keys and the logits equal the reference's."""
    model, ids = setup
    policy = TokenSelectPolicy(budget=24, sink=2, recent=4, prefill="sparse", chunk=16,
                               reuse_threshold=threshold)  # fmt: skip
    calls = record(policy)
    logits, _ = run_policy(model, ids, policy, steps=4)
    reference = Reference(sink=2, local=4, top_k=18, theta=theta_of(model), chunk=16,
                          threshold=threshold)  # fmt: skip
    expected = run_reference(model, ids, reference, steps=4)
    prefill = [c for c in calls if c[1] > 1]
    assert [c[1] for c in prefill] == ([16] * 5 + [10]) * 3  # 90 rows, per layer
    assert calls == reference.seen
    assert any(c[2] is not None for c in prefill), "no chunk was sparse"
    assert any(c[2] is None for c in prefill), "the first chunks see everything"
    torch.testing.assert_close(logits, expected.float(), rtol=1e-4, atol=1e-4)
    full, _ = run_policy(model, ids, TokenSelectPolicy(budget=24, sink=2, recent=4), steps=0)
    assert not torch.allclose(logits[0], full[0], atol=1e-4)  # the sparse prefill changed it


def test_options_outside_their_range_are_refused():
    for options in ({"reuse_threshold": -0.1}, {"reuse_threshold": 1.5}, {"prefill": "dense"},
                    {"chunk": 0}):  # fmt: skip
        with pytest.raises(UserError):
            TokenSelectPolicy(**options)


def test_a_model_without_fixed_rope_is_refused():
    """Content-only ranking rotates keys back by their positions: a model whose RoPE
    frequencies change with the length (dynamic scaling) is refused, in TokenSelect's
    words."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                          "rope_theta": 10000.0})  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    cache = CompressedCache(model.config, TokenSelectPolicy(budget=8))
    with (
        pytest.raises(UserError, match="tokenselect's content-only ranking"),
        compression(model, cache),
    ):
        pass
