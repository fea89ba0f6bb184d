"""Foundation helpers every capability shares: the bytes of tokens, chat prompts, the
end of a turn, the start of a document, context limits and the attention modules.

One implementation of each thing; capabilities import it from here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tokensieve.errors import UserError
from tokensieve.models import model_display_name


def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-level alphabet (each byte drawn as a printable char)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def special_ids(tokenizer) -> set[int]:
    """Ids that are not text: the special tokens, and added tokens marked special. Other
    added tokens are text (Gemma 3 adds "\n", "\n\n" and runs of spaces that way)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}


def vocabulary_bytes(tokenizer) -> list[bytes]:
    """The bytes of every token of the vocabulary, each on its own (one pass, no decode
    per token except for special tokens).

    Byte-level BPE through the GPT-2 byte alphabet; otherwise (SentencePiece-style) from
    the token strings: "▁" is a space, ``<0xNN>`` a byte fallback, special tokens their
    text. Use `token_bytes` for the bytes of a token *sequence* as its decode shows them.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if type(getattr(backend, "decoder", None)).__name__ == "ByteLevel":
        return token_bytes(tokenizer, range(len(tokenizer)))
    special = set(tokenizer.all_special_ids) | set(
        getattr(tokenizer, "added_tokens_decoder", {}) or {}
    )
    table = []
    for index, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if index in special or token is None:
            table.append(tokenizer.decode([index]).encode("utf-8"))
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            table.append(bytes([int(token[3:5], 16)]))
        else:
            table.append(token.replace("\u2581", " ").encode("utf-8"))
    return table


def token_bytes(tokenizer, ids: Sequence[int]) -> list[bytes]:
    """The exact bytes each token contributes to the decoded text.

    Byte-level BPE tokens map to bytes one-to-one; special tokens contribute their
    text. Other tokenizers fall back to differences of incremental decodes.
    """
    ids = [int(i) for i in ids]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = type(getattr(backend, "decoder", None)).__name__
    special = set(tokenizer.all_special_ids) | set(
        getattr(tokenizer, "added_tokens_decoder", {}) or {}
    )
    if decoder == "ByteLevel":
        table = _byte_decoder()
        pieces = []
        for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True):
            if token_id in special or any(ch not in table for ch in token):
                pieces.append(tokenizer.decode([token_id]).encode("utf-8"))
            else:
                pieces.append(bytes(table[ch] for ch in token))
        return pieces
    pieces, previous = [], b""
    for end in range(1, len(ids) + 1):
        current = tokenizer.decode(ids[:end]).encode("utf-8")
        pieces.append(current[len(previous) :] if current.startswith(previous) else current)
        previous = current
    return pieces


def token_spans(pieces: Sequence[bytes]) -> list[tuple[int, int]]:
    """Half-open byte ranges of consecutive pieces: they tile the joined bytes."""
    spans, start = [], 0
    for piece in pieces:
        spans.append((start, start + len(piece)))
        start += len(piece)
    return spans


def document_start(tokenizer) -> int | None:
    """The token put before a document so its first token gets a prediction: BOS, else
    EOS as a document separator, else None (the tokenizer has neither)."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a one-turn chat ending where the assistant starts to answer."""
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model has no chat template; analyse a text with `text` or `file`")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def end_of_turn_ids(tokenizer) -> list[int]:
    """Ids that end an assistant turn: ``<|im_end|>`` where the vocabulary has it, and EOS."""
    ids = []
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def attention_modules(model) -> list:
    """The self-attention modules (one per layer) of a transformers decoder."""
    found = [
        module
        for module in model.modules()
        if hasattr(module, "layer_idx") and "Attention" in type(module).__name__
    ]
    if not found:
        raise UserError(f"cannot find attention layers in {type(model).__name__}")
    return found


def context_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def check_context(model, n_tokens: int, hint: str = "") -> None:
    """Refuse sequences longer than the model's context (positions would be invalid).

    `hint` (given `{limit}`) says how to shorten the input where the caller has a way."""
    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        advice = f"; {hint.format(limit=limit)}" if hint else ""
        raise UserError(
            f"the input is {n_tokens} tokens but {model_display_name(model)} reads at most "
            f"{limit}{advice}"
        )
