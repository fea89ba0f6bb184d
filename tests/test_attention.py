"""The shared chunked attention (`tokensieve.attention`) against attention written out
row by row: the output, and the weights each chunk hands over (narrowed to the keys its
rows can see), with cached keys before the forward, grouped-query heads and a mask."""

from __future__ import annotations

import math

import pytest
import torch

from tokensieve.attention import chunked_attention


@pytest.mark.parametrize("first", [0, 5])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_chunks_equal_attention_row_by_row(chunk, first):
    generator = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, past, rows, dim = 1, 4, 2, 6, 11, 8
    keys = past + rows
    query = torch.randn(batch, heads, rows, dim, generator=generator)
    key = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    value = torch.randn(batch, kv_heads, keys, dim, generator=generator)
    hidden = {(3, 2)}  # (row, key) hidden beyond causality, e.g. a padded token
    mask = torch.zeros(batch, 1, rows, keys)
    for r in range(rows):
        for j in range(keys):
            if j > past + r or (r, j) in hidden:
                mask[0, 0, r, j] = float("-inf")
    seen = []
    output = chunked_attention(query, key, value, mask, dim**-0.5,
                               lambda w, start, stop: seen.append((w.clone(), start, stop)),
                               first=first, chunk=chunk)  # fmt: skip
    expected_weights = torch.zeros(heads, rows, keys)
    for h in range(heads):
        g = h // (heads // kv_heads)
        for r in range(rows):
            visible = [j for j in range(past + r + 1) if (r, j) not in hidden]
            logits = [float(query[0, h, r] @ key[0, g, j]) / math.sqrt(dim) for j in visible]
            top = max(logits)
            weights = [math.exp(x - top) for x in logits]
            for j, w in zip(visible, weights, strict=True):
                expected_weights[h, r, j] = w / sum(weights)
            expected = sum(expected_weights[h, r, j] * value[0, g, j] for j in visible)
            torch.testing.assert_close(output[0, h, r], expected, rtol=1e-5, atol=1e-6)
    assert [start for _, start, _ in seen] == list(range(first, rows, chunk))
    for weights, start, stop in seen:
        assert weights.shape == (batch, heads, stop - start, past + stop)  # no later key
        torch.testing.assert_close(weights[0], expected_weights[:, start:stop, : past + stop],
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
