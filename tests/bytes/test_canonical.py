"""Canonical covers (Phan et al.'s filter) against a brute force written here: every cover
of the bytes (depth-first over token sequences, float64 forwards), kept when its left part
(every token but the last) begins the tokenizer's encoding of some text, decided by trying
every continuation of up to three characters. The tokenizer has GPT-2's whitespace
lookahead, where the round-trip test of the authors' code drops real tokenizations."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.bytes.test_byte_model import BruteForce
from tokensieve.bytes import ByteLM
from tokensieve.bytes.canonical import PrefixCanonical
from tokensieve.lm import vocabulary_bytes

MERGES = [("Ċ", "Ċ"), ("Ġ", "Ċ"), ("a", "b"), ("Ġ", "a"), ("a", "a"), ("Ġ", "Ġ"), ("b", "a"),
          ("Ġ", "b"), ("ab", "a"), ("Ġa", "b")]  # fmt: skip
ALPHABET = "ab \n"


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(["<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def lookahead_bpe():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(11)
    model = LlamaForCausalLM(config).eval().double()
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # flat: non-canonical tokenizations carry mass
    return model, tokenizer


def _encode(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def oracle(tokenizer, tokens: tuple[int, ...], table) -> bool:
    """t begins enc(decode(t) + c) for some continuation c of up to 3 characters."""
    text = b"".join(table[t] for t in tokens).decode()
    for length in range(4):
        for chars in itertools.product(ALPHABET, repeat=length):
            if _encode(tokenizer, text + "".join(chars))[: len(tokens)] == tokens:
                return True
    return False


class CanonicalBruteForce(BruteForce):
    """P_A(x): the covers of x whose left part passes `keep`."""

    def __init__(self, model, tokenizer, context, keep):
        super().__init__(model, tokenizer, context)
        self.keep = keep

    def boundaries(self, x: bytes):
        return [b for b in super().boundaries(x) if self.keep(b[0])]


def _oracle_brute(model, tokenizer, context):
    table = vocabulary_bytes(tokenizer)
    return CanonicalBruteForce(model, tokenizer, context, lambda t: oracle(tokenizer, t, table))


FILTERED = [b"aab", b"aba b", b"b  ab"]  # [a, a], [ab, a], [b, Ġ, Ġ, a] are never canonical
TEXTS = [b"a\n\nb", b"ab\n\nab", b"a \nb", b"aba b", b"b  ab", b"ab \n\n a", b"aab"]


def test_the_tokenizer_has_the_whitespace_lookahead():
    tokenizer = _tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("a", "b", "Ċ", "ĊĊ", "Ġ", "ĠĊ")}
    assert _encode(tokenizer, "a\n\nb") == (ids["a"], ids["Ċ"], ids["Ċ"], ids["b"])
    assert _encode(tokenizer, "a\n\n") == (ids["a"], ids["ĊĊ"])  # not prefix-closed
    assert _encode(tokenizer, "a \nb") == (ids["a"], ids["Ġ"], ids["Ċ"], ids["b"])
    assert _encode(tokenizer, "a \n") == (ids["a"], ids["ĠĊ"])


@pytest.mark.parametrize("text", TEXTS)
def test_canonical_covers_equal_the_brute_force_over_canonical_left_parts(lookahead_bpe, text):
    model, tokenizer = lookahead_bpe
    byte_lm = ByteLM(model, tokenizer, beam=None, covers="canonical")
    brute = _oracle_brute(model, tokenizer, byte_lm.context)
    assert byte_lm.byte_logprob(text) == pytest.approx(brute.prefix_logprob(text), abs=1e-10)
    complete = byte_lm.byte_logprob(text, complete=True)
    assert complete == pytest.approx(brute.complete_logprob(text, byte_lm.eos), abs=1e-10)
    every = ByteLM(model, tokenizer, beam=None, covers="all").byte_logprob(text)
    if text in FILTERED:  # a non-canonical left part covers it: the filter removes mass
        assert every > byte_lm.byte_logprob(text) + 1e-6
    assert every >= byte_lm.byte_logprob(text) - 1e-12


@pytest.mark.parametrize("text", [b"a\n\n", b"ab ", b"a \n", b"b"])
def test_canonical_next_byte_is_the_brute_force_ratio(lookahead_bpe, text):
    model, tokenizer = lookahead_bpe
    byte_lm = ByteLM(model, tokenizer, beam=None, covers="canonical")
    brute = _oracle_brute(model, tokenizer, byte_lm.context)
    raw = byte_lm.state(text).next_logprobs(normalise=False)
    for char in ALPHABET:
        expected = brute.prefix_logprob(text + char.encode())
        assert raw[ord(char)] == pytest.approx(expected, abs=1e-10), char
    assert raw[256] == pytest.approx(brute.complete_logprob(text, byte_lm.eos), abs=1e-10)


def test_the_round_trip_filter_of_the_authors_code_drops_real_tokenizations(lookahead_bpe):
    """[a, Ċ, Ċ] fails encode(decode(t)) == t but begins enc("a\\n\\nb"): filtering by the
    round trip loses that mass (negative control: the oracle-based value differs)."""
    model, tokenizer = lookahead_bpe
    table = vocabulary_bytes(tokenizer)
    round_trip = ByteLM(model, tokenizer, beam=None, covers="canonical")
    round_trip.valid = lambda t: _encode(tokenizer, b"".join(table[i] for i in t).decode()) == t
    ours = ByteLM(model, tokenizer, beam=None, covers="canonical")
    brute = _oracle_brute(model, tokenizer, ours.context)
    truth = brute.prefix_logprob(b"a\n\nb")
    assert ours.byte_logprob(b"a\n\nb") == pytest.approx(truth, abs=1e-10)
    assert abs(round_trip.byte_logprob(b"a\n\nb") - truth) > 1e-3


def test_the_checker_agrees_with_the_oracle_on_every_short_sequence(lookahead_bpe):
    _, tokenizer = lookahead_bpe
    table = vocabulary_bytes(tokenizer)
    checker = PrefixCanonical(tokenizer, table)
    pieces = [tokenizer.convert_tokens_to_ids(t) for t in ("a", "b", "Ġ", "Ċ", "ĊĊ", "ĠĊ", "ab",
              "Ġa", "aa", "ĠĠ", "ba", "Ġb", "aba", "Ġab")]  # fmt: skip
    disagreements, kept = [], 0
    for length in (1, 2, 3):
        for tokens in itertools.product(pieces, repeat=length):
            if length > 1 and not oracle(tokenizer, tokens[:-1], table):
                continue  # the checker's contract: the left part has passed already
            truth = oracle(tokenizer, tokens, table)
            kept += truth
            if checker(tokens) != truth:
                disagreements.append(tokenizer.convert_ids_to_tokens(list(tokens)))
    assert not disagreements
    assert 0 < kept < len(pieces) + len(pieces) ** 2 + len(pieces) ** 3  # both answers met


@pytest.mark.embedded
def test_every_prefix_of_a_real_encoding_is_kept_and_a_split_word_is_not(embedded):
    """SmolLM2's tokenizer on real documentation text: no canonical prefix is dropped."""
    from pathlib import Path

    _, tokenizer = embedded
    page = Path("/usr/share/doc/python3.11/html/_sources/tutorial/interpreter.rst.txt")
    if not page.exists():
        pytest.skip("python3.11-doc is not installed")
    text = page.read_text()[:1500]
    table = vocabulary_bytes(tokenizer)
    checker = PrefixCanonical(tokenizer, table)
    ids = _encode(tokenizer, text)
    dropped = [i for i in range(1, len(ids) + 1) if not checker(ids[:i])]
    assert not dropped
    hello = _encode(tokenizer, "Hello")
    assert len(hello) == 1 and checker(hello)
    assert not checker(_encode(tokenizer, "H") + _encode(tokenizer, "ello"))
