"""Bits per byte: a model's loss on text, comparable across tokenizers.

Each document is encoded with the model's own tokenizer, a BOS token (else EOS, as a
document separator) is put first so the first token is scored too, and every token's
negative log-likelihood is summed once, teacher-forced, in sliding windows: each forward
reads at most `window` tokens and scores the last ``min(stride, window − 1)`` of them,
so every target sees at least ``window − stride`` tokens of context (all before it,
up to ``window − 1``). Bits per byte is that sum
over all documents divided by ``ln 2 × UTF-8 bytes`` (lm-evaluation-harness's
``bits_per_byte``), so two tokenizers of the same text compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError
from tokensieve.lm import document_start


def start_token(tokenizer) -> int:
    """The token each document is scored after (BOS, else EOS), so its first token is
    predicted too: bits per byte counts every byte."""
    first = document_start(tokenizer)
    if first is None:
        raise UserError(
            "the tokenizer has neither a BOS nor an EOS token, so a document's first token "
            "cannot be predicted; give it one (e.g. a tokenizer directory whose "
            "tokenizer_config.json names bos_token or eos_token)"
        )
    return first


@dataclass
class BitsPerByte:
    bits_per_byte: float
    nll_nats: float
    bytes: int
    tokens: int
    lossless: bool  # decode(encode(text)) == text for every document

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(self.tokens, 1)


@torch.no_grad()
def bits_per_byte(
    model, tokenizer, texts: list[str], window: int = 512, stride: int = 256, progress=False
) -> BitsPerByte:
    if not (window >= 2 and 0 < stride <= window):
        raise UserError("need a window of at least 2 tokens and 0 < stride <= window")
    # A forward of `window` tokens predicts at most window - 1 of them (the first has
    # no predecessor inside it), so that is the most a step can score.
    step = min(stride, window - 1)
    first = start_token(tokenizer)
    nll, total_bytes, tokens, lossless = 0.0, 0, 0, True
    for text in tqdm(texts, desc="bits per byte", disable=not progress, leave=False):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        lossless &= tokenizer.decode(ids) == text
        sequence = torch.tensor([first, *ids], device=model.device)
        scored = 1  # index in `sequence` of the next target
        while scored < len(sequence):
            end = min(scored + step, len(sequence))
            start = max(0, end - window)
            count = end - scored
            logits = model(input_ids=sequence[None, start:end], logits_to_keep=count + 1).logits
            log_probs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
            targets = sequence[scored:end]
            nll -= float(log_probs.gather(1, targets[:, None]).sum())
            scored = end
        total_bytes += len(text.encode("utf-8"))
        tokens += len(ids)
    bits = nll / (math.log(2) * max(total_bytes, 1))
    return BitsPerByte(bits, nll, total_bytes, tokens, lossless)
