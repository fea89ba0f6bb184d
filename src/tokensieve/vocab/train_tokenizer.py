"""Train a byte-level BPE tokenizer with the `tokenizers` library, with supertokens.

Plain BPE pre-splits text into words (GPT-2's pattern), so no token crosses a word
boundary. With ``supertokens`` (Tinycompany-AI/SuperTokenizer, the paper's recipe),
the training text is cut into chunks of 1–`max_words` words whose lengths are drawn at
random (seeded), each chunk one pre-token, so merges may join words ("of the",
" return the"); at encoding time only newlines split the text.

Special tokens (bos/eos/pad and chat markers) and the chat template come from a base
tokenizer when given, so the result can be transplanted onto that base model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tokensieve.errors import UserError

CHUNK_WORDS = (1, 2, 3, 4)
CHUNK_WEIGHTS = (0.4, 0.3, 0.2, 0.1)  # our choice; the reference samples a configured law


def supertoken_chunks(texts: list[str], max_words: int, seed: int) -> Iterator[str]:
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
    base_tokenizer=None,
    max_words: int = 4,
    seed: int = 0,
) -> PreTrainedTokenizerFast:
    if vocab_size < 300:
        raise UserError(f"`vocab_size` must be at least 300 (256 bytes + merges), got {vocab_size}")
    if not any(t.strip() for t in texts):
        raise UserError("the corpus is empty")
    specials = list(base_tokenizer.all_special_tokens) if base_tokenizer is not None else []
    tokenizer = Tokenizer(models.BPE())
    if supertokens:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        corpus: Iterator[str] = supertoken_chunks(texts, max_words, seed)
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
