"""Bits per byte against a hand computation; every token scored once in any window."""

from __future__ import annotations

import math

import pytest
import torch

from tokensieve.models import tiny_model
from tokensieve.vocab.bits_per_byte import bits_per_byte
from tokensieve.vocab.train_tokenizer import bytes_per_token, train_tokenizer

TEXTS = [
    "Return a copy of the string with leading whitespace removed.",
    "If chars is given and not None, remove characters in chars instead. ünïcode ✓",
]


def manual_bits(model, tokenizer, texts):
    nll, size = 0.0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id or tokenizer.eos_token_id]
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        log_probs = torch.log_softmax(logits, -1)
        nll -= sum(float(log_probs[i, ids[i + 1]]) for i in range(len(ids) - 1))
        size += len(text.encode())
    return nll / (math.log(2) * size)


def test_bits_per_byte_equals_a_hand_computation():
    model, tokenizer = tiny_model(seed=4)
    result = bits_per_byte(model, tokenizer, TEXTS, window=256, stride=256)
    assert result.bits_per_byte == pytest.approx(manual_bits(model, tokenizer, TEXTS), rel=1e-5)
    assert result.bytes == sum(len(t.encode()) for t in TEXTS)
    assert result.tokens == sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert result.lossless


def test_a_tokenizer_without_bos_or_eos_is_refused():
    """Without a token to score the first token after, bits per byte would skip bytes
    (or fail in torch): a one-line error instead, here and in the fine-tune's windows."""
    from tokensieve import UserError
    from tokensieve.vocab.finetune import training_windows

    model, tokenizer = tiny_model(seed=4)
    tokenizer.bos_token = tokenizer.eos_token = None
    assert tokenizer.bos_token_id is None and tokenizer.eos_token_id is None
    with pytest.raises(UserError, match="neither a BOS nor an EOS"):
        bits_per_byte(model, tokenizer, TEXTS)
    with pytest.raises(UserError, match="neither a BOS nor an EOS"):
        training_windows(tokenizer, TEXTS, 8)


def test_sliding_windows_score_each_token_once():
    model, tokenizer = tiny_model(seed=4)
    full = bits_per_byte(model, tokenizer, TEXTS, window=256, stride=256)
    windows = bits_per_byte(model, tokenizer, TEXTS, window=8, stride=3)
    assert windows.tokens == full.tokens
    # less context changes the loss a little, not the bookkeeping
    assert windows.bits_per_byte == pytest.approx(full.bits_per_byte, rel=0.2)
    with pytest.raises(ValueError):
        bits_per_byte(model, tokenizer, TEXTS, window=4, stride=5)
    with pytest.raises(ValueError):
        bits_per_byte(model, tokenizer, TEXTS, window=1, stride=1)


def one_window_per_token(model, tokenizer, texts, window):
    """The definition with stride 1, slowly: each token predicted from exactly the
    window − 1 tokens before it (fewer at the start of a document), one forward each."""
    nll, size = 0.0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id or tokenizer.eos_token_id]
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        for target in range(1, len(ids)):
            context = ids[max(0, target - (window - 1)) : target]
            with torch.no_grad():
                logits = model(torch.tensor([context])).logits[0, -1].double()
            nll -= float(torch.log_softmax(logits, -1)[ids[target]])
        size += len(text.encode())
    return nll / (math.log(2) * size)


def test_sliding_windows_equal_the_one_window_per_token_definition():
    model, tokenizer = tiny_model(seed=4)
    for window in (2, 5, 9):
        result = bits_per_byte(model, tokenizer, TEXTS, window=window, stride=1)
        expected = one_window_per_token(model, tokenizer, TEXTS, window)
        assert result.bits_per_byte == pytest.approx(expected, rel=1e-5), window


def strided_windows_one_forward_per_token(model, tokenizer, texts, window, stride):
    """The docstring's definition, slowly: targets are taken in blocks of
    ``min(stride, window − 1)`` after BOS; a block's window ends at its last target and
    holds at most `window` tokens; each target is scored by its own forward over the
    window's tokens before it."""
    step = min(stride, window - 1)
    nll, size = 0.0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id or tokenizer.eos_token_id]
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        for target in range(1, len(ids)):
            block_end = min(1 + ((target - 1) // step + 1) * step, len(ids))
            context = ids[max(0, block_end - window) : target]
            with torch.no_grad():
                logits = model(torch.tensor([context])).logits[0, -1].double()
            nll -= float(torch.log_softmax(logits, -1)[ids[target]])
        size += len(text.encode())
    return nll / (math.log(2) * size)


@pytest.mark.parametrize("window, stride", [(16, 16), (8, 3), (6, 4), (5, 9)])
def test_strided_windows_equal_the_definition_on_a_long_document(window, stride):
    model, tokenizer = tiny_model(seed=4)
    long_texts = [" ".join(TEXTS * 2)]
    if stride > window:
        with pytest.raises(ValueError):
            bits_per_byte(model, tokenizer, long_texts, window=window, stride=stride)
        return
    result = bits_per_byte(model, tokenizer, long_texts, window=window, stride=stride)
    expected = strided_windows_one_forward_per_token(model, tokenizer, long_texts, window, stride)
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-5)


def test_stride_equal_to_the_window_on_a_long_document():
    """It raised on any document longer than the window; now each forward scores
    window − 1 tokens and every token is scored once."""
    model, tokenizer = tiny_model(seed=4)
    long_texts = [" ".join(TEXTS * 4)]
    tokens = len(tokenizer(long_texts[0], add_special_tokens=False)["input_ids"])
    assert tokens > 16
    result = bits_per_byte(model, tokenizer, long_texts, window=16, stride=16)
    assert result.tokens == tokens and math.isfinite(result.bits_per_byte)
    full = bits_per_byte(model, tokenizer, long_texts, window=256, stride=256)
    assert result.bits_per_byte == pytest.approx(full.bits_per_byte, rel=0.2)


def test_supertokens_cross_word_boundaries_and_compress_more():
    corpus = [" ".join(["the value of the key is in the table"] * 30)] * 20
    plain = train_tokenizer(corpus, 300, seed=0)
    super_ = train_tokenizer(corpus, 300, supertokens=True, seed=0)
    pieces = [super_.decode([i]) for i in range(len(super_))]
    assert any(" " in p.strip() for p in pieces)  # a token spanning two words
    assert not any(" " in plain.decode([i]).strip() for i in range(len(plain)))
    assert bytes_per_token(super_, corpus) > bytes_per_token(plain, corpus)
    for tokenizer in (plain, super_):
        ids = tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == TEXTS[1]


def test_character_chunks_follow_the_reference_law():
    """The reference's recipe: random character lengths from its bins (4–23), nothing
    stripped, chunks that tile each document and may start mid-word; seeded."""
    from tokensieve.vocab.train_tokenizer import character_chunks

    texts = [" ".join(TEXTS * 30), "short", "  \n  "]
    chunks = list(character_chunks(texts, seed=0))
    assert "".join(chunks) == texts[0] + texts[1]  # whitespace-only documents are skipped
    lengths = [len(c) for c in chunks[:-2]]  # the last chunk of a document may be short
    assert min(lengths) >= 4 and max(lengths) <= 23
    assert 11 < sum(lengths) / len(lengths) < 15  # the bins' mean is about 13
    pairs = zip(chunks, chunks[1:], strict=False)
    assert any(a[-1].isalpha() and b[0].isalpha() for a, b in pairs)  # a cut inside a word
    assert list(character_chunks(texts, seed=0)) == chunks
    assert list(character_chunks(texts, seed=1)) != chunks


def test_both_supertoken_recipes_cross_words_and_round_trip():
    corpus = [" ".join(["the value of the key is in the table"] * 30)] * 20
    plain = train_tokenizer(corpus, 300, seed=0)
    for recipe in ("chars", "words"):
        tokenizer = train_tokenizer(corpus, 300, supertokens=True, recipe=recipe, seed=0)
        pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        assert any(" " in p.strip() for p in pieces), recipe
        assert bytes_per_token(tokenizer, corpus) > bytes_per_token(plain, corpus), recipe
        ids = tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == TEXTS[1]
    with pytest.raises(ValueError, match="recipe"):
        train_tokenizer(corpus, 300, supertokens=True, recipe="lines")
