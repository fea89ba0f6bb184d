"""Train a byte-level BPE tokenizer with the `tokenizers` library, with supertokens.

Plain BPE pre-splits text into words (GPT-2's pattern), so no token crosses a word
boundary. Supertokens may: the training text is cut into chunks, each chunk one
pre-token, so merges can join words ("of the", " return the"). Two recipes:

- ``"chars"`` (the default; the reference's, Tinycompany-AI/SuperTokenizer
  ``helper.py``/``train.py`` at e52dbdc): each document is cut into chunks of a random
  number of *characters*, a length bin drawn with the reference's weights (4–5 … 22–23
  characters, mean about 13) and a length uniform inside it, so chunks may start or
  end mid-word; nothing is stripped (spaces and newlines stay inside chunks); NFC
  normalisation; tokens of at most 30 characters. At encoding time nothing splits the
  text (the reference's ByteLevel without its regex). Deviations: seeded here (the
  reference never seeds its chunking), and runs of 7 identical characters are kept
  (the reference's training split deletes them).
- ``"words"``: chunks of 1–`max_words` whole words (weights 0.4/0.3/0.2/0.1, our
  choice), newlines splitting the text at training and encoding time; tokensieve's
  earlier recipe, kept as an option.

Special tokens (bos/eos/pad and chat markers) and the chat template come from a base
tokenizer when given, so the result can be transplanted onto that base model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tokensieve.errors import UserError

CHUNK_WORDS = (1, 2, 3, 4)
CHUNK_WEIGHTS = (0.4, 0.3, 0.2, 0.1)  # our choice for the "words" recipe
# The reference's character-length bins and weights (train.yaml, `test_distribution`).
CHARACTER_BINS = ((4, 5, 0.044), (6, 7, 0.091), (8, 9, 0.146), (10, 11, 0.171),
                  (12, 13, 0.185), (14, 15, 0.171), (16, 17, 0.146), (18, 19, 0.091),
                  (20, 21, 0.044), (22, 23, 0.011))  # fmt: skip
RECIPES = ("chars", "words")


def character_chunks(texts: list[str], seed: int) -> Iterator[str]:
    """Each document cut into chunks of random character lengths (the reference's law);
    the chunks of a document concatenate back to it."""
    rng = random.Random(seed)
    shortest = CHARACTER_BINS[0][0]
    weights = [w for _, _, w in CHARACTER_BINS]
    for text in texts:
        if not text.strip():
            continue
        start = 0
        while start < len(text):
            left = len(text) - start
            if left < shortest:
                yield text[start:]
                break
            low, high, _ = rng.choices(CHARACTER_BINS, weights)[0]
            length = rng.randint(min(low, left), min(high, left))
            yield text[start : start + length]
            start += length


def word_chunks(texts: list[str], max_words: int, seed: int) -> Iterator[str]:
    """Each line cut into runs of 1..max_words words (each with its leading space)."""
    rng = random.Random(seed)
    sizes = [n for n in CHUNK_WORDS if n <= max_words] or [1]
    weights = CHUNK_WEIGHTS[: len(sizes)]
    for text in texts:
        for line in text.split("\n"):
            words = re.findall(r"\s*\S+", line)
            i = 0
            while i < len(words):
                n = rng.choices(sizes, weights)[0]
                yield "".join(words[i : i + n])
                i += n


def train_tokenizer(
    texts: list[str],
    vocab_size: int,
    *,
    supertokens: bool = False,
    recipe: str = "chars",
    base_tokenizer=None,
    max_words: int = 4,
    seed: int = 0,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of `vocab_size` tokens trained on `texts`; with
    `supertokens`, by `recipe` (see the module docstring)."""
    if recipe not in RECIPES:
        raise UserError(f"unknown supertoken recipe {recipe!r}; choose one of "
                        f"{', '.join(RECIPES)}")  # fmt: skip
    if not 300 <= vocab_size <= 2**24:  # the trainer's own limit is a u32; 16M is plenty
        raise UserError(
            f"`vocab_size` must be at least 300 (256 bytes + merges) and at most 2**24, "
            f"got {vocab_size}"
        )
    if not any(t.strip() for t in texts):
        raise UserError("the corpus is empty")
    specials = list(base_tokenizer.all_special_tokens) if base_tokenizer is not None else []
    tokenizer = Tokenizer(models.BPE())
    limits = {}
    if supertokens and recipe == "chars":
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                           use_regex=False)  # fmt: skip
        corpus: Iterator[str] = character_chunks(texts, seed)
        limits = {"max_token_length": 30}
    elif supertokens:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        corpus = word_chunks(texts, max_words, seed)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        corpus = iter(texts)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
        **limits,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    if base_tokenizer is not None:
        for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = getattr(base_tokenizer, role, None)
            if value is not None:
                setattr(fast, role, value)
        fast.chat_template = base_tokenizer.chat_template
    return fast


def bytes_per_token(tokenizer, texts: list[str]) -> float:
    """Compression: UTF-8 bytes per token over `texts` (higher compresses more)."""
    total = sum(len(t.encode("utf-8")) for t in texts)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return total / max(tokens, 1)
