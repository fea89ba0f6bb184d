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
