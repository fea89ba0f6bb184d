"""The compressed cache against the uncompressed model and slow per-paper references."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from tokensieve import UserError
from tokensieve.kv import (
    POLICIES,
    CompressedCache,
    FullPolicy,
    H2OPolicy,
    KeyformerPolicy,
    RandomPolicy,
    SirLLMPolicy,
    SnapKVPolicy,
    StreamingPolicy,
    TidalDecodePolicy,
    TOVAPolicy,
    compression,
    make_policy,
)
from tokensieve.kv.cache import SLACK
from tokensieve.kv.testing import greedy_logits, run_policy
from tokensieve.models import with_cache

TEXT = (
    "Return a copy of the string with leading whitespace removed. If chars is given "
    "and not None, remove characters in chars instead."
)


@pytest.fixture(scope="module")
def setup(tiny):
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    return model, ids


def decode(model, ids, cache=None, steps=6):
    """Greedy manual loop; returns the logits of every step (prefill last row first)."""
    return greedy_logits(model, ids, DynamicCache(config=model.config) if cache is None else cache,
                         steps)  # fmt: skip


def compressed_run(model, ids, policy, steps=6):
    return run_policy(model, ids, policy, steps)


def test_full_equals_uncompressed_exactly(setup):
    model, ids = setup
    reference = decode(model, ids)
    cache, logits = compressed_run(model, ids, FullPolicy())
    assert torch.equal(logits, reference)
    assert cache.get_seq_length() == ids.shape[1] + 6


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_budget_covering_everything_equals_full(setup, name):
    model, ids = setup
    reference = decode(model, ids)
    policy = make_policy(name, budget=ids.shape[1] + 50) if name != "full" else FullPolicy()
    _, logits = compressed_run(model, ids, policy)
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "policy",
    [
        StreamingPolicy(budget=0.3),
        H2OPolicy(budget=0.3, sink=2),
        KeyformerPolicy(budget=0.3),
        SnapKVPolicy(budget=0.3, window=8),
        TOVAPolicy(budget=0.3, sink=1),
        RandomPolicy(budget=0.3, sink=1, recent=2),
    ],
    ids=lambda p: p.name,
)
def test_memory_shrinks_to_budget_and_sinks_and_recent_are_kept(setup, policy):
    model, ids = setup
    steps = 6
    cache, logits = compressed_run(model, ids, policy, steps)
    n = ids.shape[1]
    budget = math.floor(0.3 * n)
    assert cache.budget == budget
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    expected_slots = budget if policy.compresses == "every step" else budget + steps
    per_slot = 2 * config.num_key_value_heads * head_dim * 4  # keys + values, float32
    assert cache.kv_bytes() == config.num_hidden_layers * expected_slots * per_slot
    # the buffers hold the budget and SLACK free slots (which SnapKV's new tokens fill)
    held = sum(layer.held_bytes() for layer in cache.layers)
    assert held == config.num_hidden_layers * (budget + SLACK) * per_slot
    seen = n + steps
    recent = policy.recent_slots(budget)
    for positions in cache.kept_positions():
        for head in positions[0]:
            kept = set(head.tolist())
            assert len(kept) == expected_slots
            assert set(range(policy.sink)) <= kept
            assert set(range(seen - recent, seen)) <= kept
    assert torch.isfinite(logits).all()


def prefill_attention(model, ids):
    with torch.no_grad():
        model.set_attn_implementation("eager")
        out = model(input_ids=ids, output_attentions=True)
        model.set_attn_implementation("sdpa")
    return [a.double() for a in out.attentions]  # per layer [1, heads, n, n]


def reference_keep(scores, n, budget, sink, recent):
    """Sinks + recent window + top scores of the rest, by a Python sort."""
    protected = set(range(sink)) | set(range(n - recent, n))
    rest = sorted((i for i in range(n) if i not in protected), key=lambda i: (-scores[i], i))
    return sorted(protected | set(rest[: budget - len(protected)]))


def kept_after_prefill(model, ids, policy):
    cache = CompressedCache(model.config, policy)
    with torch.no_grad(), compression(model, cache):
        model(input_ids=ids, **with_cache(cache), use_cache=True)
    return cache, [p[0] for p in cache.kept_positions()]


def group_heads(attention, kv_heads):
    heads = attention.shape[1]
    return [
        list(range(g * heads // kv_heads, (g + 1) * heads // kv_heads)) for g in range(kv_heads)
    ]


def test_h2o_keeps_heavy_hitters_of_accumulated_attention(setup):
    model, ids = setup
    n = ids.shape[1]
    policy = H2OPolicy(budget=0.4, sink=1)
    cache, kept = kept_after_prefill(model, ids, policy)
    budget, recent = cache.budget, policy.recent_slots(cache.budget)
    for layer, attention in enumerate(prefill_attention(model, ids)):
        for g, heads in enumerate(group_heads(attention, model.config.num_key_value_heads)):
            scores = [
                sum(float(attention[0, h, q, i]) for h in heads for q in range(n)) for i in range(n)
            ]
            assert kept[layer][g].tolist() == reference_keep(scores, n, budget, 1, recent)


def test_h2o_accumulates_over_decode_steps(setup):
    """After one decode step, scores = prefill column sums + the new query's row."""
    model, ids = setup
    policy = H2OPolicy(budget=10_000)  # keep everything, just accumulate
    cache = CompressedCache(model.config, policy)
    rows = []
    with torch.no_grad(), compression(model, cache):
        model(input_ids=ids, **with_cache(cache), use_cache=True)
        model.set_attn_implementation("eager")
        out = model(input_ids=ids[:, :1], **with_cache(cache), output_attentions=True)
        rows = [a.double() for a in out.attentions]
    prefill = prefill_attention(model, ids)
    n = ids.shape[1]
    for layer in range(model.config.num_hidden_layers):
        for g, heads in enumerate(group_heads(prefill[layer], model.config.num_key_value_heads)):
            expected = [
                sum(float(prefill[layer][0, h, :, i].sum()) for h in heads) if i < n else 0.0
                for i in range(n + 1)
            ]
            expected = [
                e + sum(float(rows[layer][0, h, 0, i]) for h in heads)
                for i, e in enumerate(expected)
            ]
            torch.testing.assert_close(
                cache.layers[layer].scores[0, g].double(),
                torch.tensor(expected, dtype=torch.float64),
                rtol=1e-4,
                atol=1e-5,
            )


def test_h2o_evicts_the_lowest_accumulated_score_at_each_decode_step(setup):
    """The decode path: each new query's attention (the model's, eager, over the slots
    the cache holds) is added to the scores kept here in Python by position, the new
    token enters, and the lowest score outside the sink and the recent window leaves.
    The kept positions must match after every step."""
    model, ids = setup
    n, kv = ids.shape[1], model.config.num_key_value_heads
    policy = H2OPolicy(budget=0.4, sink=1)
    prefill = prefill_attention(model, ids)
    cache = CompressedCache(model.config, policy)
    with torch.no_grad(), compression(model, cache):
        out = model(input_ids=ids, **with_cache(cache), use_cache=True)
        budget = cache.budget
        recent = min(policy.recent_slots(budget), budget - policy.sink)
        reference = {}  # (layer, group) -> {position: accumulated score}
        for layer, attention in enumerate(prefill):
            for g, heads in enumerate(group_heads(attention, kv)):
                kept = cache.layers[layer].positions[0, g].tolist()  # prefill: tested above
                reference[layer, g] = {p: sum(float(attention[0, h, :, p].sum()) for h in heads)
                                       for p in kept}  # fmt: skip
        model.set_attn_implementation("eager")
        token = out.logits[:, -1:].argmax(-1)
        evicted = 0
        for step in range(6):
            before = [layer.positions[0].clone() for layer in cache.layers]
            out = model(input_ids=token, **with_cache(cache), use_cache=True,
                        output_attentions=True)  # fmt: skip
            new = n + step
            for layer, attention in enumerate(out.attentions):
                for g, heads in enumerate(group_heads(attention.double(), kv)):
                    scores = reference[layer, g]
                    scores[new] = 0.0
                    for column, position in enumerate([*before[layer][g].tolist(), new]):
                        scores[position] += sum(float(attention[0, h, 0, column]) for h in heads)
                    if len(scores) > budget:
                        free = [p for p in scores if policy.sink <= p < new + 1 - recent]
                        scores.pop(min(free, key=lambda p: (scores[p], p)))
                        evicted += 1
                    assert sorted(scores) == sorted(cache.layers[layer].positions[0, g].tolist())
            token = out.logits[:, -1:].argmax(-1)
        model.set_attn_implementation("sdpa")
    assert evicted, "the cache never went over its budget: no eviction was checked"


def test_keyformer_matches_gumbel_softmax_reference(setup, monkeypatch):
    from tokensieve.kv import attention as kv_attention

    monkeypatch.setattr(kv_attention, "CHUNK", 4096)  # one noise draw for the whole prompt
    model, ids = setup
    n = ids.shape[1]
    policy = KeyformerPolicy(budget=0.4, seed=7, tau_init=1.0, tau_end=2.0)
    cache, kept = kept_after_prefill(model, ids, policy)
    generator = torch.Generator().manual_seed(7)
    budget, recent = cache.budget, policy.recent_slots(cache.budget)
    for layer, attention in enumerate(prefill_attention(model, ids)):
        noise = torch.rand(attention.shape, generator=generator).clamp(1e-10, 1 - 1e-10)
        gumbel = -torch.log(-torch.log(noise)).double()
        for g, heads in enumerate(group_heads(attention, model.config.num_key_value_heads)):
            scores = [0.0] * n
            for h in heads:
                for q in range(n):
                    row = [
                        math.log(float(attention[0, h, q, i])) + float(gumbel[0, h, q, i])
                        if i <= q
                        else -math.inf
                        for i in range(n)
                    ]
                    top = max(row)
                    weights = [math.exp(v - top) for v in row]  # τ = 1 at prefill
                    total = sum(weights)
                    for i in range(n):
                        scores[i] += weights[i] / total
            assert kept[layer][g].tolist() == reference_keep(scores, n, budget, 0, recent)


def test_tova_keeps_what_the_last_query_attends(setup):
    model, ids = setup
    n = ids.shape[1]
    policy = TOVAPolicy(budget=0.4)
    cache, kept = kept_after_prefill(model, ids, policy)
    for layer, attention in enumerate(prefill_attention(model, ids)):
        scores = [float(attention[0, :, -1, i].mean()) for i in range(n)]
        expected = reference_keep(scores, n, cache.budget, 0, 1)
        for g in range(model.config.num_key_value_heads):
            assert kept[layer][g].tolist() == expected


def test_snapkv_window_vote_with_pooling(setup):
    model, ids = setup
    n, window = ids.shape[1], 8
    policy = SnapKVPolicy(budget=0.4, window=window)
    cache, kept = kept_after_prefill(model, ids, policy)
    for layer, attention in enumerate(prefill_attention(model, ids)):
        for g, heads in enumerate(group_heads(attention, model.config.num_key_value_heads)):
            scores = []
            for i in range(n):
                total = 0.0
                for h in heads:
                    # kvpress and the authors pool over the prefix before the window only
                    votes = [float(attention[0, h, n - window :, j].mean()) for j in range(n)]
                    prefix = n - window
                    pooled = sum(votes[j] for j in range(i - 2, i + 3) if 0 <= j < prefix) / 5
                    total += pooled / len(heads)
                scores.append(total)
            assert kept[layer][g].tolist() == reference_keep(scores, n, cache.budget, 0, window)


def test_streaming_keeps_sinks_and_recent_only(setup):
    model, ids = setup
    n = ids.shape[1]
    cache, kept = kept_after_prefill(model, ids, StreamingPolicy(budget=20, sink=4))
    for layer in kept:
        for head in layer:
            assert head.tolist() == list(range(4)) + list(range(n - 16, n))


def test_random_is_seeded(setup):
    model, ids = setup
    _, a = kept_after_prefill(model, ids, RandomPolicy(budget=0.5, seed=3))
    _, b = kept_after_prefill(model, ids, RandomPolicy(budget=0.5, seed=3))
    _, c = kept_after_prefill(model, ids, RandomPolicy(budget=0.5, seed=4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_generate_with_compressed_cache_and_gqa(setup):
    model, ids = setup
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    cache = CompressedCache(model.config, KeyformerPolicy(budget=0.25, max_new_tokens=10))
    with torch.no_grad(), compression(model, cache):
        out = model.generate(ids, **with_cache(cache), max_new_tokens=10, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 10
    assert cache.get_seq_length() == ids.shape[1] + 9  # the last token is never fed back
    assert {layer.physical_length() for layer in cache.layers} == {cache.budget}
    assert model.config._attn_implementation == "sdpa"  # restored


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget": 0.0}, "in \\(0, 1\\]"),
        ({"budget": 1.5}, "in \\(0, 1\\]"),
        ({"budget": 0}, "at least 1"),
        ({"budget": -3}, "at least 1"),
        ({"budget": "half"}, "must be a number"),
    ],
)
def test_bad_budgets(options, message):
    with pytest.raises(UserError, match=message):
        H2OPolicy(**options)


def test_sink_and_recent_larger_than_budget(setup):
    model, ids = setup
    with pytest.raises(UserError, match="exceed the budget"):
        kept_after_prefill(model, ids, H2OPolicy(budget=6, sink=4, recent=4))


def test_unknown_policy_and_unsupported_architecture():
    with pytest.raises(UserError, match="unknown policy"):
        make_policy("magic")
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])
    with pytest.raises(UserError, match="full attention in every layer"):
        CompressedCache(config, H2OPolicy())


def test_sirllm_keeps_surprising_tokens_across_turns(setup):
    """Timing "after input": after each input, sinks + the highest decayed
    self-information survive (the input competes at once)."""
    model, ids = setup
    first, second = ids[:, :40], ids[:, 40:60]
    policy = SirLLMPolicy(budget=16, sink=4, decay=0.5, timing="after input")
    cache = CompressedCache(model.config, policy)
    with torch.no_grad(), compression(model, cache):
        out1 = model(input_ids=first, **with_cache(cache), use_cache=True)
        kept1 = cache.kept_positions()[0][0, 0].tolist()
        out2 = model(input_ids=second, **with_cache(cache), use_cache=True)
        kept2 = cache.kept_positions()[0][0, 0].tolist()

    def surprisal(logits, tokens, previous=None):
        logp = torch.log_softmax(logits[0].double(), -1)
        values = [None] + [float(-logp[j - 1, tokens[j]]) for j in range(1, len(tokens))]
        if previous is None:
            values[0] = max(values[1:])
        else:
            values[0] = float(-torch.log_softmax(previous.double(), -1)[tokens[0]])
        return values

    e1 = surprisal(out1.logits, first[0].tolist())
    expected1 = reference_keep(e1, 40, 16, 4, 0)
    assert kept1 == expected1
    e2 = surprisal(out2.logits, second[0].tolist(), out1.logits[0, -1])
    scores = {p: e1[p] * 0.5 for p in expected1} | {40 + j: v for j, v in enumerate(e2)}
    positions = sorted(scores)
    ranked = reference_keep([scores[p] for p in positions], len(positions), 16, 4, 0)
    assert kept2 == [positions[i] for i in ranked]
    assert all(layer.physical_length() == 16 for layer in cache.layers)


def record_selections(policy):
    """Wrap `policy.select` to record (layer, query, key, returned mask)."""
    calls = []
    original = policy.select

    def select(module, query, key, cache):
        keep = original(module, query, key, cache)
        calls.append((module.layer_idx, query.clone(), key.clone(), keep, module.scaling))
        return keep

    object.__setattr__(policy, "select", select)
    return calls


def test_tidaldecode_selects_in_one_layer_and_reuses_in_the_next():
    from tokensieve.models import tiny_model

    model, tokenizer = tiny_model(layers=4, seed=2)
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    policy = TidalDecodePolicy(budget=12, sparse_start=1, correction_layer=2)
    calls = record_selections(policy)
    reference = decode(model, ids, steps=3)
    _, logits = compressed_run(model, ids, policy, steps=3)
    assert torch.allclose(logits[0], reference[0])  # prefill is full attention
    chosen = {}
    for layer, query, key, keep, scaling in calls:
        heads, kv = query.shape[1], key.shape[1]
        if layer in (1, 2):  # selection layers attend fully and pick top-12 per head
            assert keep is None
            chosen = {}
            for h in range(heads):
                logit = [
                    float(query[0, h, 0] @ key[0, h // (heads // kv), i]) * scaling
                    for i in range(key.shape[2])
                ]
                chosen[h] = sorted(sorted(range(len(logit)), key=lambda i: -logit[i])[:12])
        elif layer == 0:
            assert keep is None
        else:
            for h in range(heads):
                assert torch.nonzero(keep[0, h, 0]).flatten().tolist() == chosen[h]


def test_sirllm_surprisal_in_chunks_equals_the_whole_log_softmax():
    """SirLLM scores long inputs in chunks of positions (bounded memory); across chunk
    borders every value equals −log p(x_i | x_<i) from one log-softmax of everything."""
    from tokensieve.kv.policies.sirllm import SirLLMState

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1200, 50, generator=generator)
    ids = torch.randint(0, 50, (1, 1200), generator=generator)
    scores = SirLLMPolicy().token_scores(SirLLMState(), ids, logits)
    logp = torch.log_softmax(logits.double(), dim=-1)
    expected = [-float(logp[0, i - 1, ids[0, i]]) for i in range(1, 1200)]
    torch.testing.assert_close(scores[0, 1:].double(), torch.tensor(expected, dtype=torch.double),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert scores[0, 0] == scores[0, 1:].max()  # the first token: the list's maximum


def test_keyformer_temperature_rises_and_scores_accumulate_while_decoding(setup, monkeypatch):
    """Keyformer's score through decoding, from the paper's definition written here: at
    forward t (0: the prompt) every query row adds softmax((log A + ζ)/τ_t) to the keys,
    τ_t = τ_init + t·(τ_end − τ_init)/max_new_tokens, ζ Gumbel noise drawn from the seeded
    generator layer after layer; a KV head sums its query heads. Nothing is evicted (a
    budget above the length), so every score is the sum over all forwards so far."""
    from tokensieve.kv import attention as kv_attention

    monkeypatch.setattr(kv_attention, "CHUNK", 4096)  # one noise draw per forward and layer
    model, ids = setup
    prompt, extra = ids[:, :20], ids[0, 20:24].tolist()
    policy = KeyformerPolicy(budget=1000, seed=3, tau_init=1.0, tau_end=2.0, max_new_tokens=4)
    cache = CompressedCache(model.config, policy)
    with torch.no_grad(), compression(model, cache):
        model(input_ids=prompt, **with_cache(cache), use_cache=True)
        for token in extra:
            model(input_ids=torch.tensor([[token]]), **with_cache(cache), use_cache=True)
    full = torch.cat([prompt, torch.tensor([extra])], dim=1)
    attentions = [a[0].double() for a in prefill_attention(model, full)]  # [heads, n, n]
    n, layers = prompt.shape[1], len(attentions)
    heads = attentions[0].shape[0]
    kv_heads = model.config.num_key_value_heads
    generator = torch.Generator().manual_seed(3)
    expected = [torch.zeros(kv_heads, full.shape[1], dtype=torch.double) for _ in range(layers)]
    forwards = [range(0, n)] + [range(n + t, n + t + 1) for t in range(len(extra))]
    for t, rows in enumerate(forwards):
        tau = 1.0 + t * (2.0 - 1.0) / 4
        keys = rows.stop  # the keys this forward sees
        for layer in range(layers):
            noise = torch.rand(1, heads, len(rows), keys, generator=generator)
            gumbel = -(-noise.clamp(1e-10, 1 - 1e-10).log()).log()
            for h in range(heads):
                for r, q in enumerate(rows):
                    a, z = attentions[layer][h, q], gumbel[0, h, r]
                    logits = [(math.log(float(a[i])) + float(z[i])) / tau if i <= q else -math.inf
                              for i in range(keys)]  # fmt: skip
                    top = max(logits)
                    weights = [math.exp(v - top) for v in logits]
                    for i in range(keys):
                        expected[layer][h // (heads // kv_heads), i] += weights[i] / sum(weights)
    for layer in range(layers):
        torch.testing.assert_close(cache.layers[layer].scores[0].double(), expected[layer],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
