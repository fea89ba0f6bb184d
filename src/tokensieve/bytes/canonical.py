"""Which token sequences a tokenizer can produce: the filter behind Phan et al.'s
canonical covers.

Phan et al. ("Exact Byte-Level Probabilities from Tokenized Language Models for FIM-Tasks
and Model Ensembles") sum the byte-token representation over *valid* covers only: a model
trained on canonical tokenizations gives the others (almost) no probability, so they can
be left out, and then each split point has one left part and the cover set is small.
Their code calls ``t`` valid when ``encode(decode(t)) == t`` (``BaseTokenizer.
_cover_enc_check`` and ``ByteTokenizer.isvalid`` in
``src/string_processor/tokenizer_wrapper.py`` of facebookresearch/Exact-Byte-Level-
Probabilities-from-Tokenized-LMs). That round trip is the right test only when canonical
encodings are prefix-closed. GPT-2-style pre-tokenizers with the whitespace lookahead
``\\s+(?!\\S)`` (SmolLM2's) are not: ``[x, Ċ, Ċ]`` fails the round trip (``x\\n\\n`` encodes
as ``[x, ĊĊ]``) yet begins ``encode("x\\n\\ny")``, and it carries the mass of every
paragraph break followed by text (algorithm note §3.2). What the assumption needs is
*prefix-canonicality*: ``t`` begins the canonical encoding of some text. tokensieve tests
that, not the round trip.

How: a token boundary where a whitespace byte follows a non-whitespace one is a boundary
of every pre-tokenizer chunk (GPT-2 regex chunks are all-whitespace or one optional space
then non-whitespace; SentencePiece pieces put "▁" first), so the canonical tokens after it
are the encoding of the text after it alone. The tokens after the last such boundary (the
*tail*) are re-encoded with short continuations appended (`PROBES`: every string of up to
two characters from a small set of character classes); ``t`` is kept when one of the
encodings starts with the tail. This decides the rules that need one or two characters of
lookahead (whitespace runs, contractions, digits); it is checked against a brute-force
oracle (every continuation of up to three characters) in the tests. When validity cannot
be decided — the tail's bytes end inside a UTF-8 character, as Gemma's byte-fallback
tokens do until the character is whole — the sequence is kept: keeping an invalid cover
only adds the model's leakage mass; dropping a valid one loses real mass.

Only the complete tokens of a cover are filtered (its left part, every token but the
last); the last, still partial token is not, as in Phan et al.'s code with
``fast_mode=True`` (what its ``generate`` runs): a trained model puts (almost) no mass on
a non-canonical last token, and checking every token under a trie node each byte would
cost a vocabulary's worth of encodings.
"""

from __future__ import annotations

from tokensieve.errors import UserError

WHITESPACE = frozenset(b" \t\n\r")
PROBE_CHARACTERS = ("a", "A", "0", ".", " ", "\n", "\t", "'", "é")
PROBES = ("",) + PROBE_CHARACTERS + tuple(a + b for a in PROBE_CHARACTERS for b in PROBE_CHARACTERS)


class PrefixCanonical:
    """``checker(tokens)``: could the tokenizer's encoding of some text start with
    `tokens`, given that it could start with ``tokens[:-1]``? (The byte model checks a
    left part each time it grows by a token, so only the last chunk needs re-encoding.)
    `table` gives each token id's bytes."""

    def __init__(self, tokenizer, table: list[bytes]):
        self.tokenizer, self.table = tokenizer, table
        ids = tokenizer("a", add_special_tokens=False)["input_ids"]
        if b"".join(table[i] for i in ids) != b"a":
            # a dummy prefix ("▁a"): the encoding of a tail would not be the tail's tokens
            raise UserError(
                "canonical covers need a tokenizer that encodes text as it is (this one adds "
                "a prefix space); use covers='all'"
            )
        self._memo: dict[tuple[int, ...], bool] = {}

    def tail(self, tokens: tuple[int, ...]) -> tuple[int, ...]:
        """The tokens after the last token boundary at a word boundary (whitespace after
        non-whitespace): their canonical form does not depend on what came before."""
        for i in range(len(tokens) - 1, 0, -1):
            before, after = self.table[tokens[i - 1]], self.table[tokens[i]]
            if after[0] in WHITESPACE and before[-1] not in WHITESPACE:
                return tokens[i:]
        return tokens

    def __call__(self, tokens: tuple[int, ...]) -> bool:
        tail = self.tail(tuple(tokens))
        if tail not in self._memo:
            self._memo[tail] = self._check(tail)
        return self._memo[tail]

    def _check(self, tail: tuple[int, ...]) -> bool:
        try:
            text = b"".join(self.table[t] for t in tail).decode("utf-8")
        except UnicodeDecodeError:
            return True  # ends inside a character: undecidable, keep
        encodings = self.tokenizer([text + probe for probe in PROBES], add_special_tokens=False)
        return any(tuple(ids[: len(tail)]) == tail for ids in encodings["input_ids"])
