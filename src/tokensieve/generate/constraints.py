"""Constraints over the generated text: may this prefix still complete? is it complete?

A constraint sees bytes, not tokens, so it does not depend on the tokenizer (anchor:
genlm-control's potentials with `prefix` and `complete`). Samplers only ever call
these two questions, and never know which kind of constraint they hold.

A byte string that ends inside a UTF-8 character (byte-level tokens split rare
characters) is never complete; it may still complete when some character starting
with those bytes extends the text validly. When one byte is missing the 64 possible
characters are all tried (exact). A lone lead byte of a 3- or 4-byte character (4,096
or 262,144 candidates) is judged on evenly spaced probes of its range plus common
emoji: exact for constraints that admit all or none of those characters (ASCII
formats, negated classes, ``.``), an approximation otherwise.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache
from itertools import product

from tokensieve.errors import UserError


def split_utf8(data: bytes) -> tuple[str, bool] | None:
    """Decode `data`, tolerating one cut character at the end.

    Returns ``(text, cut)`` where `cut` says bytes of an unfinished character were
    dropped, or None when the bytes are not UTF-8 at all.
    """
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError as exc:
        # Only a character cut at the very end is tolerated; anything else is invalid.
        if exc.reason != "unexpected end of data" or len(data) - exc.start > 3:
            return None
        try:
            return data[: exc.start].decode("utf-8"), True
        except UnicodeDecodeError:
            return None


@lru_cache(maxsize=4096)
def completions_of_cut_character(tail: bytes, budget: int) -> tuple[str, ...] | None:
    """Every character whose UTF-8 encoding starts with `tail`, or None if over budget."""
    lead = tail[0]
    length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    missing = length - len(tail)
    if missing <= 0:
        return None
    if 64**missing > budget:
        return _probe_characters(tail)
    chars = []
    for suffix in product(range(0x80, 0xC0), repeat=missing):
        try:
            chars.append((tail + bytes(suffix)).decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return tuple(chars)


def _probe_characters(tail: bytes) -> tuple[str, ...]:
    """About 64 evenly spaced characters starting with `tail` (plus common emoji)."""
    lead = tail[0]
    if lead < 0xF0:  # 3-byte characters: U+0800..U+FFFF, 4,096 per lead byte
        low = (lead & 0x0F) << 12
        probes = list(range(low, low + 0x1000, 0x40))
    else:
        probes = list(range(0x10000, 0x110000, 0x4000)) + [0x1F600, 0x1F44D, 0x1F680, 0x20000]
    chars = []
    for codepoint in probes:
        if 0xD800 <= codepoint < 0xE000:  # surrogates are not characters
            continue
        char = chr(codepoint)
        if char.encode("utf-8").startswith(tail):
            chars.append(char)
    return tuple(chars)


class Constraint(ABC):
    """A set of allowed texts, asked about prefixes while generating."""

    name = "constraint"
    cut_character_budget = 64  # characters tried exactly; more are probed

    @abstractmethod
    def prefix_text(self, text: str) -> bool:
        """True when some continuation of `text` may be complete."""

    @abstractmethod
    def complete_text(self, text: str) -> bool:
        """True when `text` itself is an allowed complete output."""

    def prefix(self, data: bytes) -> bool:
        decoded = split_utf8(data)
        if decoded is None:
            return False
        head, cut = decoded
        if not cut:
            return self.prefix_text(head)
        tail = data[len(head.encode("utf-8")) :]
        chars = completions_of_cut_character(tail, self.cut_character_budget)
        if chars is None:
            return self.prefix_text(head)
        return any(self.prefix_text(head + ch) for ch in chars)

    def complete(self, data: bytes) -> bool:
        decoded = split_utf8(data)
        return decoded is not None and not decoded[1] and self.complete_text(decoded[0])


class RegexConstraint(Constraint):
    """Texts matching a regular expression in full, with partial matching for prefixes.

    Uses the `regex` package, whose ``partial=True`` reports whether a string could be
    extended into a match: exactly the question a prefix check asks.
    """

    def __init__(self, pattern: str):
        import regex

        if not pattern:
            raise UserError("the regular expression is empty")
        try:
            self.compiled = regex.compile(pattern)
        except regex.error as exc:
            raise UserError(f"invalid regular expression {pattern!r}: {exc}") from None
        self.pattern = pattern
        self.name = f"regex {pattern}"

    def prefix_text(self, text: str) -> bool:
        return self.compiled.fullmatch(text, partial=True) is not None

    def complete_text(self, text: str) -> bool:
        return self.compiled.fullmatch(text) is not None


class PredicateConstraint(Constraint):
    """Any Python predicate, the case where each check is expensive.

    `function(text, complete)` answers both questions; a one-argument
    `function(text)` is taken to be prefix-closed (true of a text implies true of its
    prefixes, like "no letter e") and answers both the same way.
    """

    def __init__(self, function: Callable[..., bool], name: str | None = None):
        self.function = function
        self.name = name or getattr(function, "__name__", "predicate")
        try:
            parameters = inspect.signature(function).parameters
            self.two_arguments = len(parameters) >= 2
        except (TypeError, ValueError):
            self.two_arguments = False

    def _call(self, text: str, complete: bool) -> bool:
        try:
            result = self.function(text, complete) if self.two_arguments else self.function(text)
            return bool(result)  # inside: a result with no truth value (an array) raises here
        except Exception as exc:  # a user's function: report, don't traceback
            raise UserError(
                f"the predicate {self.name} raised {type(exc).__name__}: {exc}"
            ) from None

    def prefix_text(self, text: str) -> bool:
        return self._call(text, False)

    def complete_text(self, text: str) -> bool:
        return self._call(text, True)

    @classmethod
    def from_spec(cls, spec: str) -> PredicateConstraint:
        """Load ``module:function``; the module is looked for in the current directory
        first (as ``python -m`` does), then wherever Python finds modules."""
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise UserError(f"a predicate is given as module:function, got {spec!r}")
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise UserError(f"cannot import {module_name!r}: {exc}") from None
        finally:
            sys.path.remove(os.getcwd())
        function = getattr(module, attribute, None)
        if not callable(function):
            raise UserError(f"{module_name!r} has no function {attribute!r}")
        return cls(function, name=spec)
