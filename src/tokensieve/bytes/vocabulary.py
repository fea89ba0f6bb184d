"""The vocabulary as byte strings, sorted, so that "every token whose bytes start with p"
is one contiguous range and its probability mass one difference of prefix sums.

A trie over token bytes is what the byte-level algorithm walks (a hypothesis sits at the
node of the bytes its last, still partial token has spelt so far); sorting the tokens by
their bytes flattens that trie: the subtree of node ``p`` is the range of tokens starting
with ``p``, found by two binary searches. One cumulative sum of a next-token distribution
in that order then gives the mass of every node in O(1) (the "cumulative sum over
tokens sorted by bytes" of the algorithm note, instead of a vocabulary × bytes matrix).
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from tokensieve.errors import UserError
from tokensieve.lm import special_ids, vocabulary_bytes


class ByteVocabulary:
    """Token bytes of `tokenizer`: ordinary tokens (text) sorted by bytes; special and
    added tokens (BOS, ``<|im_end|>``, ...) are not text and are kept out."""

    def __init__(self, tokenizer):
        table = vocabulary_bytes(tokenizer)
        special = special_ids(tokenizer)
        ordinary = [i for i, piece in enumerate(table) if i not in special and piece]
        if not ordinary:
            raise UserError("the tokenizer has no token that maps to bytes")
        _check_round_trip(tokenizer, table)
        ordinary.sort(key=lambda i: table[i])
        self.size = len(table)
        self.table = table
        self.sorted_ids = np.array(ordinary, dtype=np.int64)
        self.sorted_bytes = [table[i] for i in ordinary]
        self.longest = max(len(piece) for piece in self.sorted_bytes)
        self._ceiling = b"\xff" * (self.longest + 1)
        self.first_bounds = np.array(
            [bisect_left(self.sorted_bytes, bytes([b])) for b in range(256)]
            + [len(self.sorted_bytes)]
        )

    def span(self, prefix: bytes) -> tuple[int, int]:
        """``[lo, hi)``: the sorted positions of the tokens whose bytes start with
        `prefix` (empty when none does)."""
        lo = bisect_left(self.sorted_bytes, prefix)
        hi = bisect_left(self.sorted_bytes, prefix + self._ceiling, lo)
        return lo, hi

    def exact(self, prefix: bytes, lo: int) -> list[int]:
        """Token ids spelling exactly `prefix`, given its span's start (they come first)."""
        found = []
        while lo < len(self.sorted_bytes) and self.sorted_bytes[lo] == prefix:
            found.append(int(self.sorted_ids[lo]))
            lo += 1
        return found

    def cumulative(self, probabilities: np.ndarray) -> np.ndarray:
        """Prefix sums (float64, a leading 0) of `probabilities` in sorted-token order:
        the mass of span ``[lo, hi)`` is ``sums[hi] - sums[lo]``."""
        ordered = np.asarray(probabilities, dtype=np.float64)[self.sorted_ids]
        return np.concatenate([[0.0], np.cumsum(ordered)])


PROBE = "Hello, world! x = 12\n\tdef f(a, b):  return a ≤ b"


def _check_round_trip(tokenizer, table: list[bytes]) -> None:
    """Refuse a tokenizer whose token bytes do not spell the text they encode (a
    WordPiece "##" vocabulary, say): every byte-level result would be wrong."""
    ids = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    spelt = b"".join(table[i] for i in ids)
    expected = PROBE.encode("utf-8")
    if spelt not in (expected, b" " + expected):  # SentencePiece may add a leading space
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise UserError(
            f"the tokens of {name} cannot be mapped to bytes (they spell {spelt[:40]!r} "
            f"for {expected[:40]!r}); byte-level probabilities need byte-level or "
            "SentencePiece tokens"
        )
