"""`generate`'s samplers over the byte-level model: constraints need not align with
tokens; the first byte's distribution under masking is the byte model's, restricted."""

from __future__ import annotations

import numpy as np
import pytest
import regex

from tokensieve.bytes.sampler_view import ByteSamplerView
from tokensieve.generate import RegexConstraint
from tokensieve.generate.api import generate, prompt_ids


@pytest.mark.parametrize("method", ["awrs", "masking", "smc"])
def test_samplers_draw_bytes_that_satisfy_the_constraint(tiny, method):
    model, tokenizer = tiny
    pattern = "[0-9]{2}-[a-z]{2}"
    result = generate(
        model,
        tokenizer,
        "Give a code.",
        RegexConstraint(pattern),
        method=method,
        max_tokens=8,
        seed=1,
        view=ByteSamplerView,
    )
    assert result.completions
    for completion in result.completions:
        assert regex.fullmatch(pattern, completion.text), completion.text
        assert all(0 <= t <= 256 for t in completion.token_ids)  # bytes, then the end


def test_the_view_gives_the_byte_models_next_byte_distributions(tiny):
    model, tokenizer = tiny
    ids = prompt_ids(tokenizer, "Hello", chat=True)
    view = ByteSamplerView(model, tokenizer, ids)
    first = view.start(2)
    assert first.shape == (2, 257) and np.allclose(np.exp(first).sum(axis=1), 1.0)
    second = view.step([ord("a"), ord("b")])
    expected = [view.byte_lm.start().advance(b).next_logprobs() for b in (ord("a"), ord("b"))]
    assert np.allclose(second, np.stack(expected))
    view.select([1, 1])
    assert view.states[0] is view.states[1]


def test_cli_generate_byte_level(cli, tiny_dir):
    code, out, err = cli(
        "generate",
        "--model",
        tiny_dir,
        "--prompt",
        "Code?",
        "--regex",
        "[a-z]{3}",
        "--byte-level",
        "--max-tokens",
        "5",
        "--json",
        "--quiet",
    )
    assert code == 0, err
