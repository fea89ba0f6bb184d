"""JSON Schema and Lark grammars as byte-level constraints, on top of llguidance.

llguidance compiles a schema or grammar into an Earley parser over a tokenizer's
tokens. Here the "tokenizer" is the 256 single bytes, so the parser answers our
tokenizer-independent questions byte by byte: a prefix is viable when every byte is
consumed without error, complete when the parser is then in an accepting state.

Parser states of viable prefixes are cached, so checking ``context + token`` copies
the context's state and consumes only the token's bytes (a few microseconds).
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np

from tokensieve.errors import UserError, first_line
from tokensieve.generate.constraints import Constraint

EOS_BYTE_TOKEN = 256


class _ByteTokenizer:
    """What llguidance's TokenizerWrapper needs: 256 one-byte tokens and an EOS."""

    eos_token_id = EOS_BYTE_TOKEN
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
    special_token_ids = [EOS_BYTE_TOKEN]

    def __call__(self, data):
        return list(data.encode("utf-8") if isinstance(data, str) else data)


_TOKENIZER = None


def _byte_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        from llguidance import LLTokenizer, TokenizerWrapper

        _TOKENIZER = LLTokenizer(TokenizerWrapper(_ByteTokenizer()), slices=[])
    return _TOKENIZER


class LLGuidanceConstraint(Constraint):
    """A constraint from an llguidance grammar (JSON Schema, Lark, regex)."""

    cache_size = 4096
    longest_token = 64  # how far back a cached context state is looked for

    def __init__(self, grammar: str, name: str):
        from llguidance import LLMatcher

        self.name = name
        problem = LLMatcher.validate_grammar(grammar)
        if problem:
            raise UserError(f"invalid {name}: {first_line(problem)}")
        self.grammar = grammar
        self._root = LLMatcher(_byte_tokenizer(), grammar)
        if self._root.is_error():
            raise UserError(f"invalid {name}: {first_line(self._root.get_error())}")
        self._states: OrderedDict[bytes, object] = OrderedDict()
        self._token_states: OrderedDict[tuple, object] = OrderedDict()
        self._model_tokenizers: dict[int, object] = {}

    @classmethod
    def from_json_schema(cls, schema: str | dict) -> LLGuidanceConstraint:
        from llguidance import LLMatcher

        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise UserError(f"the JSON schema is not valid JSON: {exc}") from None
        if not isinstance(schema, dict | bool):
            raise UserError("a JSON schema must be an object")
        try:
            grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema))
        except Exception as exc:  # llguidance reports schema problems as exceptions
            raise UserError(f"invalid JSON schema: {first_line(exc)}") from None
        return cls(grammar, "JSON schema")

    @classmethod
    def from_regex(cls, pattern: str) -> LLGuidanceConstraint:
        """A regular expression (llguidance's syntax, close to Rust's `regex`)."""
        from llguidance import LLMatcher

        try:
            grammar = LLMatcher.grammar_from_regex(pattern)
        except Exception as exc:
            raise UserError(f"invalid regular expression: {first_line(exc)}") from None
        return cls(grammar, "regular expression")

    @classmethod
    def from_lark(cls, text: str) -> LLGuidanceConstraint:
        from llguidance import LLMatcher

        if not text.strip():
            raise UserError("the grammar is empty")
        try:
            grammar = LLMatcher.grammar_from_lark(text)
        except Exception as exc:
            raise UserError(f"invalid grammar: {first_line(exc)}") from None
        return cls(grammar, "grammar")

    def _state(self, data: bytes):
        """The parser after consuming `data`, or None when `data` is not viable."""
        if data in self._states:
            self._states.move_to_end(data)
            return self._states[data]
        base, start = self._root, 0
        for cut in range(len(data) - 1, max(-1, len(data) - self.longest_token - 1), -1):
            cached = self._states.get(data[:cut])
            if cached is not None:
                base, start = cached, cut
                break
        state = base.deep_copy()
        rest = list(data[start:])
        if rest and (state.try_consume_tokens(rest) != len(rest) or state.is_error()):
            return None
        self._states[data] = state
        if len(self._states) > self.cache_size:
            self._states.popitem(last=False)
        return state

    def token_mask(self, lm, token_ids: list[int]) -> np.ndarray:
        """Allowed next tokens of `lm`'s vocabulary after `token_ids`: one llguidance call.

        A fast full-vocabulary mask for the masking sampler, computed by llguidance's
        token trie over the model's own tokenizer (end-of-turn included when complete).
        """
        from llguidance import LLMatcher
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        key = (id(lm.tokenizer), tuple(token_ids))
        matcher = self._token_states.get(key)
        if matcher is None:
            if token_ids:
                parent = self._token_states.get((id(lm.tokenizer), tuple(token_ids[:-1])))
                matcher = parent.deep_copy() if parent is not None else None
                pending = token_ids[-1:] if parent is not None else token_ids
            else:
                matcher, pending = None, []
            if matcher is None:
                matcher = LLMatcher(self._model_tokenizer(lm), self.grammar)
                pending = token_ids
            if pending:
                matcher.consume_tokens(list(pending))
            self._token_states[key] = matcher
            if len(self._token_states) > self.cache_size:
                self._token_states.popitem(last=False)
        bitmask = allocate_token_bitmask(1, lm.vocab_size)
        fill_next_token_bitmask(matcher, bitmask)
        bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")
        return bits[: lm.vocab_size].astype(bool)

    def _model_tokenizer(self, lm):
        from llguidance.hf import from_tokenizer

        key = id(lm.tokenizer)
        if key not in self._model_tokenizers:
            self._model_tokenizers[key] = from_tokenizer(
                lm.tokenizer, n_vocab=lm.vocab_size, eos_token=sorted(lm.eos_ids)
            )
        return self._model_tokenizers[key]

    def prefix(self, data: bytes) -> bool:
        return self._state(data) is not None

    def complete(self, data: bytes) -> bool:
        state = self._state(data)
        return state is not None and state.is_accepting()

    def prefix_text(self, text: str) -> bool:
        return self.prefix(text.encode("utf-8"))

    def complete_text(self, text: str) -> bool:
        return self.complete(text.encode("utf-8"))
