"""The byte-level model on the embedded SmolLM2 (context <|im_start|>), against the exact
values of the algorithm note (shared/specs/bytes.md §2, computed there by summing every
cover, and by genlm-bytes): where the naive next-token view is wrong, bytes are right."""

from __future__ import annotations

import pytest
import torch

from tokensieve.bytes import ByteLM
from tokensieve.lm import vocabulary_bytes

pytestmark = pytest.mark.embedded

EXPECTED = [
    (b"Hello wor", {"l": 0.118, "k": 0.730, "d": 0.074}),
    (b"Hello.\n\n", {"T": 0.194, "I": 0.150}),  # [Ċ, Ċ] and [ĊĊ] both end at the cut
    (b"Hello ", {"w": 0.052, "t": 0.237}),
]


def _naive(model, tokenizer, context, prefix: bytes, byte: int) -> float:
    """Tokenize the prefix, sum the next-token probabilities of tokens starting with b."""
    ids = list(context) + tokenizer(prefix.decode(), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probabilities = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
    table = vocabulary_bytes(tokenizer)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    return sum(float(probabilities[i]) for i, piece in enumerate(table)
               if i not in special and piece[:1] == bytes([byte]))  # fmt: skip


@pytest.mark.parametrize("covers, beam", [("canonical", None), ("all", 8)])
@pytest.mark.parametrize("prefix, expected", EXPECTED)
def test_next_byte_probabilities_on_the_embedded_model(embedded, prefix, expected, covers, beam):
    model, tokenizer = embedded
    byte_lm = ByteLM(model, tokenizer, beam=beam, covers=covers)
    probabilities = byte_lm.next_byte_distribution(prefix)
    for char, value in expected.items():
        assert probabilities[ord(char)] == pytest.approx(value, abs=2e-3), char
    char = next(iter(expected))
    naive = _naive(model, tokenizer, byte_lm.context, prefix, ord(char))
    assert abs(naive - expected[char]) > 0.05  # the naive view is off at these cuts


def test_canonical_covers_leave_out_only_the_models_leakage(embedded):
    """log P_A("Hello") (canonical left parts) sits just below log P_B (every cover): the
    model's mass on non-canonical tokenizations (note §3.4: 6.9e-4 nats with the last
    token filtered too; less here, where it is not)."""
    model, tokenizer = embedded
    every = ByteLM(model, tokenizer, beam=None, covers="all")
    canonical = ByteLM(model, tokenizer, beam=None, covers="canonical")
    gap = canonical.byte_logprob(b"Hello") - every.byte_logprob(b"Hello")
    assert -1e-3 < gap < -1e-5
    assert len(canonical.state(b"Hello")) == 5 < len(every.state(b"Hello")) == 15
