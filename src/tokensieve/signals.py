"""Per-token signals of a causal LM over a text or over the model's own answer.

For token ``t_i`` every signal describes the moment the model produced (or would
produce) it, i.e. the next-token distribution ``p(. | t_<i)`` read at position ``i-1``:

- ``entropy``: ``H = -sum_v p(v) log p(v)`` over the full vocabulary at temperature 1,
  in nats, from float32 log-softmax (numerically stable). High entropy marks a *fork*.
- ``surprisal``: ``-log p(t_i | t_<i)`` in nats.
- ``top1_prob`` and ``margin``: the largest probability and its lead over the second.
- ``attention_received``: how much later queries attend to the token: the attention
  weight ``A[l, h, q, i]`` averaged over layers ``l``, heads ``h`` and the queries
  ``q >= i`` that can see it (the token itself included, so the last token is defined).
- ``attention_total``: the same sum over queries without dividing by their number:
  H2O's accumulated "heavy hitter" score, which favours early tokens by construction.

The text is processed in chunks through a KV cache, and attention weights are reduced
inside a forward hook per layer, so a 4,096-token text never materialises a full
``[layers, heads, n, n]`` attention tensor.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError, check_sampling
from tokensieve.inspect import SIGNALS, UNITS
from tokensieve.models import model_display_name, with_cache
from tokensieve.outputs import json_text


@dataclass
class TokenSignals:
    """One row per analysed token; signal columns are float arrays of length ``n``.

    A value is NaN where it is undefined (the attention columns when attention was
    not computed). ``byte_spans[i]`` is the half-open byte range of token ``i`` in
    ``text.encode("utf-8")``; the spans tile the text exactly.
    """

    text: str
    token_ids: list[int]
    pieces: list[str]
    byte_spans: list[tuple[int, int]]
    values: dict[str, np.ndarray]
    model: str = ""
    prompt: str | None = None
    forking: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def with_forking(self, rho: float) -> TokenSignals:
        """A copy whose ``forking`` column marks the top-`rho` entropy tokens."""
        return replace(self, forking=forking_tokens(self, rho), meta={**self.meta, "rho": rho})

    def rows(self) -> Iterator[dict]:
        """Rows as plain dicts (JSON/CSV friendly; NaN becomes None)."""
        for i, token_id in enumerate(self.token_ids):
            row = {
                "index": i,
                "token_id": int(token_id),
                "piece": self.pieces[i],
                "byte_start": self.byte_spans[i][0],
                "byte_end": self.byte_spans[i][1],
            }
            for name, column in self.values.items():
                value = float(column[i])
                row[name] = value if math.isfinite(value) else None
            if self.forking is not None:
                row["forking"] = bool(self.forking[i])
            yield row

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "text": self.text,
            "signals": list(self.values),
            "units": {name: UNITS[name] for name in self.values if name in UNITS},
            "meta": self.meta,
            "tokens": list(self.rows()),
        }

    def to_json(self) -> str:
        return json_text(self.to_dict())

    def to_csv(self) -> str:
        rows = list(self.rows())
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return buffer.getvalue()


def forking_tokens(signals: TokenSignals | np.ndarray, rho: float = 0.2) -> np.ndarray:
    """Mark exactly ``ceil(rho * n)`` highest-entropy tokens (the forking minority).

    ``n`` counts tokens with a defined entropy. Ties are broken by position (earlier
    first), so the count is exact even when many entropies are equal. This is the
    paper's "top-20% entropy" set; its 80th-percentile threshold selects the same
    tokens when there are no ties at the boundary.
    """
    if not (isinstance(rho, int | float) and 0.0 < rho <= 1.0):
        raise UserError(f"rho must be in (0, 1], got {rho}")
    entropy = np.asarray(signals["entropy"] if isinstance(signals, TokenSignals) else signals)
    defined = np.flatnonzero(~np.isnan(entropy))
    # 1e-9 guards against float error (0.2 * 10 = 2.0000000000000004 must give 2).
    k = min(len(defined), math.ceil(rho * len(defined) - 1e-9))
    order = defined[np.lexsort((defined, -entropy[defined]))]
    mask = np.zeros(len(entropy), dtype=bool)
    mask[order[:k]] = True
    return mask


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


def _spans(pieces: Sequence[bytes]) -> list[tuple[int, int]]:
    spans, start = [], 0
    for piece in pieces:
        spans.append((start, start + len(piece)))
        start += len(piece)
    return spans


def attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention modules (one per layer) of a transformers decoder."""
    found = [
        module
        for module in model.modules()
        if hasattr(module, "layer_idx") and "Attention" in type(module).__name__
    ]
    if not found:
        raise UserError(f"cannot find attention layers in {type(model).__name__}")
    return found


@contextmanager
def eager_attention(model):
    """Temporarily switch to eager attention, the one that returns attention weights."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


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


def next_token_stats(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy, surprisal, top-1 probability and margin of each row's distribution.

    Args:
        logits: ``[m, vocab]`` raw logits (temperature 1, no processing).
        targets: ``[m]`` the token actually at each next position.
    Computed in float32 from log-softmax, so a dominant logit gives entropy 0, not NaN.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    probs = logp.exp()
    top2 = probs.topk(min(2, probs.shape[-1]), dim=-1).values
    second = top2[:, 1] if top2.shape[-1] > 1 else torch.zeros_like(top2[:, 0])
    return {
        "entropy": -(probs * logp).sum(-1),
        "surprisal": -logp.gather(1, targets[:, None].long())[:, 0],
        "top1_prob": top2[:, 0],
        "margin": top2[:, 0] - second,
    }


@torch.no_grad()
def score_sequence(
    model,
    ids: torch.Tensor,
    first: int,
    *,
    chunk_size: int = 512,
    attention: bool = True,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Signals for tokens ``ids[first:]`` of one sequence, conditioned on all before.

    Args:
        ids: ``[n]`` token ids; ``ids[:first]`` is context only (BOS, a prompt).
        first: index of the first analysed token, ``>= 1`` (it needs a predecessor).
        chunk_size: query positions per forward pass; bounds attention memory to
            ``heads * chunk_size * n`` floats per layer.
    Returns:
        ``{signal: float64 array of length n - first}``.
    """
    from transformers import DynamicCache

    if first < 1:
        raise ValueError("first must be >= 1: the first token has no prediction")
    n = int(ids.shape[0])
    check_context(model, n, "analyse the first part with --max-tokens (max_tokens=) below {limit}")
    count = n - first
    out = {name: np.full(count, np.nan) for name in SIGNALS}
    received = torch.zeros(n, dtype=torch.float64)
    head_layers = [0]

    def reduce_attention(_module, _args, output):
        weights = output[1]  # [batch, heads, queries, keys]
        if weights is None:
            raise RuntimeError("attention weights unavailable; eager attention is required")
        received[: weights.shape[-1]] += weights.double().sum(dim=(0, 1, 2))
        head_layers[0] += weights.shape[1]

    hooks = []
    if attention:
        hooks = [m.register_forward_hook(reduce_attention) for m in attention_modules(model)]
    cache = DynamicCache(config=model.config)
    starts = range(0, n, chunk_size)
    try:
        with eager_attention(model) if attention else nullcontext():
            for start in tqdm(starts, desc="signals", unit="chunk", disable=not progress):
                end = min(start + chunk_size, n)
                head_layers[0] = 0
                logits = model(
                    input_ids=ids[None, start:end], **with_cache(cache), use_cache=True
                ).logits[0]
                # Position p predicts token p + 1; keep predictions of analysed tokens.
                lo, hi = max(start, first - 1), min(end, n - 1)
                if lo >= hi:
                    continue
                stats = next_token_stats(logits[lo - start : hi - start], ids[lo + 1 : hi + 1])
                rows = slice(lo + 1 - first, hi + 1 - first)
                for name, column in stats.items():
                    out[name][rows] = column.double().numpy()
    finally:
        for hook in hooks:
            hook.remove()
    if attention:
        per_head_layer = received / max(head_layers[0], 1)
        seen_by = torch.arange(n, 0, -1, dtype=torch.float64)  # queries q >= i
        out["attention_total"] = per_head_layer[first:].numpy()
        out["attention_received"] = (per_head_layer / seen_by)[first:].numpy()
    return out


def _context_token(tokenizer) -> int | None:
    """The token that starts a document, so the text's first token gets a prediction."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def text_signals(
    model,
    tokenizer,
    text: str,
    *,
    max_tokens: int | None = None,
    chunk_size: int = 512,
    attention: bool = True,
    progress: bool = False,
) -> TokenSignals:
    """Signals for every token of `text`, read by the model as a document.

    The tokenizer's BOS (else EOS) token is prepended as context, so the first token
    is scored too; `max_tokens` truncates long texts (else they must fit the context).
    """
    if not text or not text.strip():
        raise UserError("the text is empty")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        if max_tokens < 1:
            raise UserError(f"--max-tokens must be at least 1, got {max_tokens}")
        ids = ids[:max_tokens]
    pieces = token_bytes(tokenizer, ids)
    joined = b"".join(pieces)
    exact = joined == text.encode("utf-8")[: len(joined)]
    if max_tokens is not None:
        text = joined.decode("utf-8", errors="replace")
    context = _context_token(tokenizer)
    prefix = [] if context is None else [context]
    sequence = torch.tensor(prefix + ids, dtype=torch.long)
    values = score_sequence(
        model, sequence, 1, chunk_size=chunk_size, attention=attention, progress=progress
    )
    if context is None:  # nothing predicts the first token: its row stays undefined
        values = {name: np.concatenate([[np.nan], column]) for name, column in values.items()}
    return TokenSignals(
        text=text,
        token_ids=list(ids),
        pieces=[p.decode("utf-8", errors="replace") for p in pieces],
        byte_spans=_spans(pieces),
        values=values,
        model=model_display_name(model),
        meta={
            "mode": "text",
            "spans_exact": bool(exact),
            "context_token": context,
            "context_ids": prefix,
        },
    )


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a one-turn chat ending where the assistant starts to answer."""
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model has no chat template; analyse a text with --text/--file")
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


class _ProgressStreamer:
    """A transformers streamer that only advances a progress bar."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, desc="generating", unit="tok", disable=not enabled)
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        self.bar.update(int(value.numel()))

    def end(self) -> None:
        self.bar.close()


@torch.no_grad()
def generate_answer(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    progress: bool = False,
) -> tuple[list[int], list[int]]:
    """Sample the model's answer to `prompt` via its chat template.

    Temperature 1 samples the model's own distribution (as in RLVR rollouts);
    ``temperature=0`` is greedy. Returns ``(prompt_ids, answer_ids)``; the answer
    includes the end-of-turn token when the model stopped by itself.
    """
    if max_new_tokens < 1:
        raise UserError(f"the answer length must be at least 1 token, got {max_new_tokens}")
    check_sampling(temperature)
    prompt_ids = chat_prompt_ids(tokenizer, prompt)
    check_context(model, len(prompt_ids) + max_new_tokens)
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    output = model.generate(
        torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        eos_token_id=end_of_turn_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        streamer=_ProgressStreamer(max_new_tokens, progress),
        **(sampling if temperature > 0 else {"do_sample": False}),
    )
    return prompt_ids, output[0, len(prompt_ids) :].tolist()


def answer_signals(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 256,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    chunk_size: int = 512,
    attention: bool = True,
    progress: bool = False,
) -> TokenSignals:
    """Generate an answer to `prompt`, then the signals of the answer's tokens.

    The answer is re-read teacher-forced after generation, which gives the same
    distributions the sampler drew from (temperature-1 logits, before any
    processing) plus attention, through one code path shared with `text_signals`.
    """
    prompt_ids, answer_ids = generate_answer(
        model,
        tokenizer,
        prompt,
        max_new_tokens,
        seed=seed,
        temperature=temperature,
        progress=progress,
    )
    if not answer_ids:
        raise UserError("the model produced no answer tokens")
    sequence = torch.tensor(prompt_ids + answer_ids, dtype=torch.long)
    values = score_sequence(
        model,
        sequence,
        len(prompt_ids),
        chunk_size=chunk_size,
        attention=attention,
        progress=progress,
    )
    pieces = token_bytes(tokenizer, answer_ids)
    return TokenSignals(
        text=b"".join(pieces).decode("utf-8", errors="replace"),
        token_ids=answer_ids,
        pieces=[p.decode("utf-8", errors="replace") for p in pieces],
        byte_spans=_spans(pieces),
        values=values,
        model=model_display_name(model),
        prompt=prompt,
        meta={
            "mode": "answer",
            "seed": seed,
            "temperature": temperature,
            "context_ids": prompt_ids,
        },
    )


def display_piece(piece: str) -> str:
    """A token string made visible: whitespace shows as ↵ ␣ ⇥, control bytes escaped."""
    stripped = piece.strip()
    if not stripped:
        return piece.replace("\n", "↵").replace(" ", "␣").replace("\t", "⇥") or "∅"
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in stripped)


def summarize(signals: TokenSignals, rho: float = 0.2, top: int = 10) -> dict:
    """The figures `inspect` prints: counts, low-entropy share, the forking threshold."""
    entropy = signals["entropy"]
    defined = entropy[~np.isnan(entropy)]
    forking = signals.forking if signals.forking is not None else forking_tokens(signals, rho)
    words = Counter(display_piece(signals.pieces[i]) for i in np.flatnonzero(forking))
    return {
        "tokens": len(signals),
        "mean_entropy": float(defined.mean()) if defined.size else float("nan"),
        "fraction_below_0.01": float((defined < 0.01).mean()) if defined.size else float("nan"),
        "entropy_p80": float(np.percentile(defined, 80)) if defined.size else float("nan"),
        "rho": rho,
        "forking_count": int(forking.sum()),
        "top_forking": words.most_common(top),
    }
