"""Constraints answer prefix/complete over bytes, whatever produced them."""

from __future__ import annotations

import numpy as np
import pytest

from tokensieve import UserError
from tokensieve.generate import LLGuidanceConstraint, PredicateConstraint, RegexConstraint
from tokensieve.generate.constraints import split_utf8


def test_regex_prefix_and_complete():
    c = RegexConstraint(r"[0-9]{4}-[0-9]{2}")
    assert c.prefix(b"") and c.prefix(b"20") and c.prefix(b"2024-0")
    assert not c.prefix(b"2024-0a") and not c.prefix(b"x")
    assert c.complete(b"2024-01") and not c.complete(b"2024-0")
    assert not c.prefix(b"2024-011")


def test_cut_utf8_characters_are_judged_by_their_possible_completions():
    c = RegexConstraint("caf[éè]")
    assert c.prefix(b"caf" + "é".encode()[:1])  # é cut after its first byte
    assert not c.complete(b"caf" + "é".encode()[:1])
    assert not c.prefix(b"caf\xc4")  # no é/è starts with 0xc4
    assert not c.prefix(b"caf\xa9")  # a stray continuation byte is never valid
    ascii_only = RegexConstraint("[a-z]+")
    for lead in (b"\xc3", b"\xe4", b"\xf0"):
        assert not ascii_only.prefix(b"ab" + lead)
    emoji = RegexConstraint(".+")
    assert emoji.prefix("😀".encode()[:1]) and emoji.prefix("日".encode()[:1])


def test_split_utf8():
    assert split_utf8("ab☃".encode()) == ("ab☃", False)
    assert split_utf8("ab☃".encode()[:-1]) == ("ab", True)
    assert split_utf8(b"a\xffb") is None


def test_predicate_one_and_two_arguments():
    one = PredicateConstraint(lambda text: "e" not in text)
    assert one.prefix(b"cat") and one.complete(b"cat") and not one.prefix(b"tree")

    def at_least_three(text, complete):
        return len(text) >= 3 or not complete

    two = PredicateConstraint(at_least_three)
    assert two.prefix(b"ab") and not two.complete(b"ab") and two.complete(b"abc")


def test_predicate_errors_become_user_errors():
    def broken(text):
        raise KeyError("x")

    with pytest.raises(UserError, match="raised KeyError"):
        PredicateConstraint(broken).prefix(b"a")

    def ambiguous(text):  # a result with no truth value fails in bool(), not in the call
        return np.array([True, False])

    with pytest.raises(UserError, match="raised ValueError"):
        PredicateConstraint(ambiguous).prefix(b"a")
    with pytest.raises(UserError, match="module:function"):
        PredicateConstraint.from_spec("json")
    with pytest.raises(UserError, match="no function"):
        PredicateConstraint.from_spec("json:nope")
    assert PredicateConstraint.from_spec("string:capwords").name == "string:capwords"


def test_json_schema_constraint_is_byte_exact():
    c = LLGuidanceConstraint.from_json_schema(
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}},
            "required": ["name", "ok"],
            "additionalProperties": False,
        }
    )
    text = '{"name": "Zoë", "ok": true}'.encode()
    assert all(c.prefix(text[:i]) for i in range(len(text) + 1))
    assert c.complete(text) and not c.complete(text[:-1])
    assert not c.prefix(b'{"nome"') and not c.prefix(text + b"x")
    assert not c.prefix(b'{"name": "a", "ok": 1')


def test_lark_grammar_constraint():
    c = LLGuidanceConstraint.from_lark('start: "yes" | "no" | "maybe"')
    assert c.prefix(b"ma") and c.complete(b"no") and not c.prefix(b"nope")


@pytest.mark.parametrize("pattern", ["[a-", "(unclosed", ""])
def test_invalid_regex(pattern):
    with pytest.raises(UserError):
        RegexConstraint(pattern)
