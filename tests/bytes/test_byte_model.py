"""The byte-level model against a brute-force sum over token sequences (float64, written
here from the definition: every token sequence whose decoding covers the bytes), and the
properties a byte-level model must have."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokensieve.bytes import ByteEnsemble, ByteLM, ByteVocabulary, continue_bytes
from tokensieve.lm import vocabulary_bytes
from tokensieve.models import tiny_model


@pytest.fixture(scope="module")
def tiny64():
    model, tokenizer = tiny_model(seed=3, head_scale=4.0)  # flat-ish: many covers matter
    return model.double(), tokenizer


def _ordinary(tokenizer):
    table = vocabulary_bytes(tokenizer)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    return {i: table[i] for i in range(len(table)) if i not in special and table[i]}


class BruteForce:
    """P(x) = Σ over covers t of x of P(t | context), every tokenization, by depth-first
    search; each P(t) from a fresh full forward of context + t[:-1]."""

    def __init__(self, model, tokenizer, context):
        self.model, self.context = model, list(context)
        self.pieces = _ordinary(tokenizer)
        self._memo = {}

    def next_token(self, tokens: tuple) -> np.ndarray:
        if tokens not in self._memo:
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([self.context + list(tokens)])).logits
            self._memo[tokens] = torch.log_softmax(logits[0, -1].double(), -1).numpy()
        return self._memo[tokens]

    def boundaries(self, x: bytes):
        """(tokens, log P) for every token sequence decoding to exactly a prefix of x,
        with the bytes it spells."""
        out, stack = [], [((), 0.0, b"")]
        while stack:
            tokens, logp, spelt = stack.pop()
            out.append((tokens, logp, spelt))
            if len(spelt) == len(x):
                continue
            logs = self.next_token(tokens)
            for token, piece in self.pieces.items():
                if x.startswith(spelt + piece):
                    stack.append((tokens + (token,), logp + logs[token], spelt + piece))
        return out

    def prefix_logprob(self, x: bytes) -> float:
        if not x:
            return 0.0
        total = 0.0
        for tokens, logp, spelt in self.boundaries(x):
            if len(spelt) == len(x):
                continue  # a cover's last token starts before the end of x
            logs = self.next_token(tokens)
            rest = x[len(spelt) :]
            for token, piece in self.pieces.items():
                if piece.startswith(rest):  # the last token ends at x or runs past it
                    total += math.exp(logp + logs[token])
        return math.log(total) if total > 0 else -math.inf

    def complete_logprob(self, x: bytes, eos: list[int]) -> float:
        total = 0.0
        for tokens, logp, spelt in self.boundaries(x):
            if spelt == x:
                total += math.exp(logp) * float(np.exp(self.next_token(tokens)[eos]).sum())
        return math.log(total) if total > 0 else -math.inf


# words of the tiny tokenizer's training text: many tokenizations each (" string" keeps
# 17 hypotheses alive), plus text it rarely merges
TEXTS = [b" string", b" import", b'"json":', b"decimal", b"s a", b"\n\nR", b"x"]


@pytest.mark.parametrize("text", TEXTS)
def test_prefix_probability_equals_the_sum_over_every_cover(tiny64, text):
    model, tokenizer = tiny64
    byte_lm = ByteLM(model, tokenizer, beam=None, covers="all")
    brute = BruteForce(model, tokenizer, byte_lm.context)
    assert byte_lm.byte_logprob(text) == pytest.approx(brute.prefix_logprob(text), abs=1e-10)
    complete = byte_lm.byte_logprob(text, complete=True)
    assert complete == pytest.approx(brute.complete_logprob(text, byte_lm.eos), abs=1e-10)


@pytest.mark.parametrize("text", [b"", b" st", b" json", b"impo", b"\n"])
def test_next_byte_distribution_equals_brute_force_ratios(tiny64, text):
    model, tokenizer = tiny64
    byte_lm = ByteLM(model, tokenizer, beam=None, covers="all")
    brute = BruteForce(model, tokenizer, byte_lm.context)
    state = byte_lm.state(text)
    raw = state.next_logprobs(normalise=False)  # log P(x b) and log P(x, end)
    # every byte and the end from the brute force, normalised here
    brute_raw = [brute.prefix_logprob(text + bytes([b])) for b in range(256)]
    brute_raw.append(brute.complete_logprob(text, byte_lm.eos))
    for b in [ord(c) for c in "Tthe ar\n(o"] + [0xE2, 256]:
        assert raw[b] == pytest.approx(brute_raw[b], abs=1e-10)
    reference = np.exp(np.array(brute_raw))
    probabilities = np.exp(state.next_logprobs())
    assert np.allclose(probabilities, reference / reference.sum(), atol=1e-12)


def test_a_beam_is_a_lower_bound_that_tightens(tiny64):
    model, tokenizer = tiny64
    exact = ByteLM(model, tokenizer, beam=None, covers="all").byte_logprob(b" string")
    bounds = [
        ByteLM(model, tokenizer, beam=k, covers="all").byte_logprob(b" string")
        for k in (1, 2, 8, 1000)
    ]
    assert all(b <= exact + 1e-12 for b in bounds)
    assert bounds == sorted(bounds) and bounds[0] < exact - 1e-6  # one hypothesis loses mass
    assert bounds[-1] == pytest.approx(exact, abs=1e-12)


def test_samples_never_split_a_character(tiny64):
    model, tokenizer = tiny64
    byte_lm = ByteLM(model, tokenizer, beam=4)
    for seed in range(6):
        out, _ = continue_bytes(byte_lm, b"The ", 12, temperature=4.0, seed=seed)
        out.decode("utf-8")  # raises if a character was split or ill-formed
    # a prompt ending inside a character: the next bytes finish it first
    out, _ = continue_bytes(byte_lm, b"\xe2", 1, temperature=4.0, seed=0)
    assert len(out) >= 2 and all(0x80 <= b < 0xC0 for b in out[:2])
    (b"\xe2" + out).decode("utf-8")
    raw, _ = continue_bytes(byte_lm, b"\xe2", 1, temperature=4.0, seed=0, whole_characters=False)
    assert len(raw) == 1  # asked to: stops where told


def test_an_ensemble_of_a_model_with_itself_is_the_model(tiny64):
    model, tokenizer = tiny64
    byte_lm = ByteLM(model, tokenizer, beam=8)
    alone = byte_lm.next_byte_distribution(b"The te")
    mixture = ByteEnsemble([byte_lm, byte_lm], [0.5, 0.5], "mixture").next_byte_distribution(
        b"The te"
    )
    product = ByteEnsemble([byte_lm, byte_lm], [0.5, 0.5], "product").next_byte_distribution(
        b"The te"
    )
    assert np.allclose(mixture, alone, atol=1e-12)
    assert np.allclose(product, alone, atol=1e-5)  # up to the 1e-6 uniform floor


def test_an_ensemble_across_tokenizers_combines_the_members_per_byte(tiny64):
    """Each byte's distribution from the members' own next-byte distributions, combined
    here: Σ wᵢpᵢ, or Π((1 − 1e-6)pᵢ + 1e-6/257)^wᵢ renormalised; a text's probability is
    the product over its bytes (and the end, for a complete text)."""
    model, tokenizer = tiny64
    other, other_tokenizer = tiny_model(vocab_size=400, seed=5, head_scale=4.0)
    members = [ByteLM(model, tokenizer), ByteLM(other.double(), other_tokenizer)]
    weights = [0.3, 0.7]
    text = b"The w"
    for mode in ("mixture", "product"):
        ensemble = ByteEnsemble(members, weights, mode)
        expected_logprob = 0.0
        for i in range(len(text) + 1):
            prefix = text[:i]
            p = [m.next_byte_distribution(prefix) for m in members]
            if mode == "mixture":
                reference = weights[0] * p[0] + weights[1] * p[1]
            else:
                floored = [(1 - 1e-6) * q + 1e-6 / 257 for q in p]
                reference = floored[0] ** weights[0] * floored[1] ** weights[1]
                reference = reference / reference.sum()
            found = ensemble.next_byte_distribution(prefix)
            assert np.allclose(found, reference, atol=1e-12, rtol=1e-9), (mode, prefix)
            expected_logprob += math.log(reference[text[i]] if i < len(text) else reference[256])
        assert ensemble.byte_logprob(text, complete=True) == pytest.approx(expected_logprob,
                                                                            abs=1e-9)  # fmt: skip


@pytest.mark.parametrize(
    "weights, message",
    [([0.5, 0.6], "sum to 1"), ([1.0], "one weight per model"), ([1.5, -0.5], "non-negative")],
)
def test_ensemble_weights_are_checked(tiny64, weights, message):
    from tokensieve.errors import UserError

    with pytest.raises(UserError, match=message):
        ByteEnsemble([None, None], weights)


def test_vocabulary_spans_are_the_tokens_starting_with_a_prefix(tiny64):
    _, tokenizer = tiny64
    vocabulary = ByteVocabulary(tokenizer)
    pieces = _ordinary(tokenizer)
    for prefix in [b"t", b"th", b"the", b" ", b"\n", b"zzz", b"\xe2"]:
        lo, hi = vocabulary.span(prefix)
        found = {int(i) for i in vocabulary.sorted_ids[lo:hi]}
        assert found == {i for i, p in pieces.items() if p.startswith(prefix)}
        assert set(vocabulary.exact(prefix, lo)) == {i for i, p in pieces.items() if p == prefix}


def test_a_tokenizer_whose_tokens_are_not_bytes_is_refused():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokensieve.errors import UserError

    vocab = {"[UNK]": 0, "hello": 1, "##llo": 2, "he": 3, "world": 4, ",": 5, "!": 6, "x": 7}
    wordpiece = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]")
    with pytest.raises(UserError, match="cannot be mapped to bytes"):
        ByteVocabulary(tokenizer)


def test_added_tokens_that_are_text_count_and_special_ones_do_not():
    from tokensieve.models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["\n\n\n"])  # text, as Gemma 3 adds newline runs
    tokenizer.add_tokens(["<|tool|>"], special_tokens=True)
    vocabulary = ByteVocabulary(tokenizer)
    lo, _ = vocabulary.span(b"\n\n\n")
    assert tokenizer.convert_tokens_to_ids("\n\n\n") in vocabulary.exact(b"\n\n\n", lo)
    tool = tokenizer.convert_tokens_to_ids("<|tool|>")
    assert tool not in set(vocabulary.sorted_ids.tolist())


@pytest.mark.parametrize("text", [b"The quick bro", b" string import js", b"a b  c\n\nde"])
def test_a_fixed_head_equals_the_full_recursion_for_canonical_covers(tiny64, text):
    """`fixed_head` (the CLI's default for continuing a prompt) reads the prompt up to its
    last word boundary as its canonical tokens: for canonical covers that is exact (the
    pre-tokenizer fixes the tokens before a word boundary), for every cover it is not
    (the head's other tokenizations are left out)."""
    model, tokenizer = tiny64
    fixed = ByteLM(model, tokenizer, fixed_head=True).next_byte_distribution(text)
    full = ByteLM(model, tokenizer, fixed_head=False).next_byte_distribution(text)
    assert np.allclose(fixed, full, atol=1e-12)
    if text != b"The quick bro":  # here the head's other tokenizations weigh < 1e-12
        every = [ByteLM(model, tokenizer, fixed_head=head, covers="all") for head in (1, 0)]
        a, b = (lm.next_byte_distribution(text) for lm in every)
        assert np.abs(a - b).max() > 1e-6
