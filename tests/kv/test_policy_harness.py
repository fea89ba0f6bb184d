"""Every registered policy passes `check_policy`'s generic guarantees."""

from __future__ import annotations

import pytest
import torch

from tokensieve.kv import POLICIES, make_policy
from tokensieve.kv.testing import check_policy

TEXT = (
    "Return a copy of the string with leading whitespace removed. If chars is given "
    "and not None, remove characters in chars instead."
)


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_passes_the_generic_checks(tiny, name):
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    policy = make_policy(name) if name == "full" else make_policy(name, budget=0.3)
    check_policy(policy, model, ids)


def test_the_harness_catches_a_policy_that_is_not_reproducible(tiny):
    """A policy ranking by unseeded randomness must fail the check."""
    from dataclasses import dataclass

    from tokensieve.kv.policy import KVPolicy

    @dataclass
    class Unseeded(KVPolicy):
        name = "unseeded"
        reads = "nothing"

        def rank(self, scores):
            return torch.rand(scores.shape)  # the global generator: differs run to run

    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    with pytest.raises(AssertionError, match="two equal runs"):
        check_policy(Unseeded(budget=0.3), model, ids)


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_runs_in_bfloat16(tiny, name):
    """Everything the cache and the policies allocate follows the model's dtype and
    device: a bfloat16 model keeps bfloat16 keys, finite logits and its budget."""
    from tokensieve.kv.testing import run_policy

    model, tokenizer = tiny
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16).eval()
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    policy = make_policy(name) if name == "full" else make_policy(name, budget=0.3)
    cache, logits = run_policy(half, ids, policy, steps=4)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert all(layer.keys.dtype == torch.bfloat16 for layer in cache.layers)
    if policy.compresses == "every step":
        assert cache.layers[0].physical_length() == cache.budget


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_passes_the_generic_checks_on_cuda(tiny, name):
    model, tokenizer = tiny
    on_gpu = type(model)(model.config)
    on_gpu.load_state_dict(model.state_dict())
    on_gpu = on_gpu.to("cuda").eval()
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]], device="cuda")
    policy = make_policy(name) if name == "full" else make_policy(name, budget=0.3)
    check_policy(policy, on_gpu, ids)
