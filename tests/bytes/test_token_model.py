"""Next-token distributions along shared prefixes: one cache cut back and extended must
give what a fresh forward gives, also on a model with sliding-window layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokensieve.bytes.token_model import TokenModel
from tokensieve.bytes.vocabulary import ByteVocabulary
from tokensieve.models import tiny_model, tiny_tokenizer


def _gemma3_with_a_small_window():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = tiny_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval().double(), tokenizer


@pytest.mark.parametrize("build", [lambda: tiny_model(seed=1), _gemma3_with_a_small_window])
def test_distributions_equal_a_fresh_forward_in_any_order(build):
    model, tokenizer = build()
    model = model.double()
    token_model = TokenModel(model, ByteVocabulary(tokenizer), keep=2)
    base = tuple(range(20, 32))
    queries = [base, base[:7] + (40, 41), base, base[:3], base[:3] + (50,), base + (60, 61)]
    for tokens in queries:  # cut back past the window, extended, asked again
        found, sums = token_model.distribution(tokens)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(tokens)])).logits[0, -1].double()
        expected = torch.softmax(logits, -1).numpy()[: len(tokenizer)]
        assert np.allclose(found, expected, atol=1e-12), tokens
        assert sums[-1] == pytest.approx(expected[ByteVocabulary(tokenizer).sorted_ids].sum())
    assert token_model.tokens_read < sum(len(q) for q in queries)  # prefixes were reused


def test_a_prefetched_batch_equals_fresh_forwards():
    model, tokenizer = tiny_model(seed=1)
    model = model.double()
    token_model = TokenModel(model, ByteVocabulary(tokenizer))
    base = tuple(range(20, 32))
    queries = [base + (5,), base + (6, 7), base[:10] + (8,), base + (9, 10, 11)]
    token_model.prefetch(queries)
    assert token_model.forwards == 2  # the trunk, then one batch of the other three
    for tokens in queries:
        found, _ = token_model.distribution(tokens)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(tokens)])).logits[0, -1].double()
        assert np.allclose(found, torch.softmax(logits, -1).numpy(), atol=1e-12), tokens
    assert token_model.forwards == 2  # all answered from the batch


def test_positions_past_the_window_are_refused():
    """A learned-position model fails on them and a RoPE model extrapolates silently:
    both the single-query and the batched path refuse in one line instead."""
    from tokensieve import UserError

    model, tokenizer = tiny_model(seed=1, max_positions=16)
    token_model = TokenModel(model, ByteVocabulary(tokenizer))
    token_model.distribution(tuple(range(20, 36)))  # 16 tokens: the whole window
    with pytest.raises(UserError, match="reads at most 16"):
        token_model.distribution(tuple(range(20, 37)))
    with pytest.raises(UserError, match="reads at most 16"):
        token_model.prefetch([tuple(range(20, 30)) + (5,) * 4, tuple(range(20, 30)) + (6,) * 8])
