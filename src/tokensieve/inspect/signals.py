"""Per-token signals of a causal LM over a text or over the model's own answer.

`TokenSignals` holds one row per token (id, text piece, exact byte span, every signal of
`tokensieve.scoring`); `text_signals` reads a text as a document, `answer_signals` lets
the model answer a prompt and re-reads its answer teacher-forced.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError, check_sampling
from tokensieve.lm import (
    chat_prompt_ids,
    check_context,
    document_start,
    end_of_turn_ids,
    token_bytes,
    token_spans,
)
from tokensieve.models import model_display_name
from tokensieve.outputs import json_text
from tokensieve.scoring import display_piece, forking_tokens, score_sequence
from tokensieve.signal_names import UNITS


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
    units: dict[str, str] = field(default_factory=dict)  # of signals beyond `SIGNALS`

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def with_signal(self, name: str, values: np.ndarray, unit: str) -> TokenSignals:
        """A copy with one more signal column (one value per token)."""
        if len(values) != len(self):
            raise ValueError(f"{name} has {len(values)} values for {len(self)} tokens")
        return replace(self, values={**self.values, name: np.asarray(values, dtype=float)},
                       units={**self.units, name: unit})  # fmt: skip

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
            "units": {name: ({**UNITS, **self.units}).get(name, "") for name in self.values},
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
            raise UserError(f"`max_tokens` must be at least 1, got {max_tokens}")
        ids = ids[:max_tokens]
    pieces = token_bytes(tokenizer, ids)
    joined = b"".join(pieces)
    exact = joined == text.encode("utf-8")[: len(joined)]
    if max_tokens is not None:
        text = joined.decode("utf-8", errors="replace")
    context = document_start(tokenizer)
    prefix = [] if context is None else [context]
    hint = "analyse the first part with `max_tokens` below {limit}"
    check_context(model, len(prefix) + len(ids), hint)
    sequence = torch.tensor(prefix + ids, dtype=torch.long, device=model.device)
    values = score_sequence(
        model, sequence, 1, chunk_size=chunk_size, attention=attention, progress=progress
    )
    if context is None:  # nothing predicts the first token: its row stays undefined
        values = {name: np.concatenate([[np.nan], column]) for name, column in values.items()}
    return TokenSignals(
        text=text,
        token_ids=list(ids),
        pieces=[p.decode("utf-8", errors="replace") for p in pieces],
        byte_spans=token_spans(pieces),
        values=values,
        model=model_display_name(model),
        meta={
            "mode": "text",
            "spans_exact": bool(exact),
            "context_token": context,
            "context_ids": prefix,
        },
    )


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
        torch.tensor([prompt_ids], device=model.device),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=model.device),
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
    sequence = torch.tensor(prompt_ids + answer_ids, dtype=torch.long, device=model.device)
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
        byte_spans=token_spans(pieces),
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
