"""Reading a text longer than the model's context through a bounded cache (StreamingLLM).

StreamingLLM (Xiao et al., ICLR 2024) reads an unbounded stream with a cache of fixed
size: the first few tokens (attention sinks) and a window of the most recent ones, with
positions given by rank in the cache (`tokensieve.kv.rotation`). Its Figure 3 compares
perplexity over a long text for dense attention, window attention without the sinks, and
sinks + window; the text is fed token by token.

`stream_perplexity` feeds the text in chunks of `chunk` tokens (default 32) instead,
for speed: each chunk attends to the kept cache and causally to itself, then every layer
evicts back to the budget. A token late in a chunk therefore sees up to `chunk - 1`
more tokens than the budget; with chunk=1 this is the paper's token-by-token reading.
Any evicting policy that compresses as it reads can stream (StreamingLLM, H2O, TOVA,
Keyformer, SirLLM per chunk, random); those that compress once after a prompt (SnapKV)
or select without evicting (TokenSelect, TidalDecode) cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError
from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.policy import KVPolicy
from tokensieve.kv.rotation import rope_frequencies
from tokensieve.lm import context_length
from tokensieve.models import with_cache


@dataclass
class StreamResult:
    policy: str
    pos_shift: bool
    budget: int
    chunk: int
    tokens_read: list[int] = field(default_factory=list)  # at the end of each window
    window_perplexity: list[float] = field(default_factory=list)
    perplexity: float = math.nan  # over every predicted token
    kept: int = 0  # slots per layer and head at the end
    max_position: int = 0  # the largest position a query was given


def check_stream(
    model, policy: KVPolicy, pos_shift: bool, chunk: int, window: int
) -> torch.Tensor | None:
    """Refuse what cannot stream; the RoPE frequencies re-rotation will use (None
    without it)."""
    if chunk < 1 or window < 1:
        raise UserError(f"chunk and window must be at least 1, got {chunk} and {window}")
    if policy.compresses not in ("every step", "per input", "before input"):
        raise UserError(
            f"{policy.name} does not evict as it reads (it compresses {policy.compresses}); "
            "a stream needs a policy that does: streaming, h2o, tova, keyformer, sirllm, random"
        )
    if isinstance(policy.budget, float):
        raise UserError(
            f"a stream needs its budget as a token count (e.g. 1024), got {policy.budget}"
        )
    limit = context_length(model)
    if not pos_shift and limit is not None and policy.budget + chunk > limit:
        raise UserError(
            f"a budget of {policy.budget} tokens (+ a chunk of {chunk}) exceeds the model's "
            f"window of {limit} positions without re-rotation; lower --budget or use --pos-shift"
        )
    return rope_frequencies(model) if pos_shift else None  # refuses models without RoPE


def _losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) per row, on the CPU."""
    logs = torch.log_softmax(logits, dim=-1)
    return -logs.gather(1, targets[:, None])[:, 0].cpu()


@torch.no_grad()
def stream_perplexity(
    model,
    ids: torch.Tensor,
    policy: KVPolicy,
    pos_shift: bool = True,
    chunk: int = 32,
    window: int = 1024,
    progress: bool = False,
) -> StreamResult:
    """Perplexity of `ids` (``[n]``) read through a cache `policy` bounds, per window of
    `window` predicted tokens. With `pos_shift`, kept keys sit at their rank in the cache."""
    frequencies = check_stream(model, policy, pos_shift, chunk, window)
    if len(ids) < 2:
        raise UserError("the text has fewer than 2 tokens")
    ids = ids.to(model.device)
    cache = CompressedCache(model.config, policy, pos_shift=frequencies)
    result = StreamResult(policy.name, pos_shift, int(policy.budget), chunk)
    losses: list[torch.Tensor] = []
    previous = None  # the last logits of the chunk before: they predict this chunk's first
    with compression(model, cache):
        starts = range(0, len(ids), chunk)
        for start in tqdm(starts, disable=not progress, desc=f"{policy.name} stream", leave=False):
            piece = ids[start : start + chunk]
            result.max_position = max(result.max_position, cache.get_seq_length() + len(piece) - 1)
            out = model(input_ids=piece[None], **with_cache(cache), use_cache=True)
            logits = out.logits[0].float()
            if previous is not None:
                logits = torch.cat([previous[None], logits])
                targets = piece
            else:
                targets = piece[1:]
            losses.append(_losses(logits[: len(targets)], targets))
            previous = out.logits[0, -1].float()
    nll = torch.cat(losses).double()
    for i in range(0, len(nll), window):  # whole windows (a short text: one short one)
        part = nll[i : i + window]
        if len(part) < window and result.window_perplexity:
            break
        result.window_perplexity.append(math.exp(part.mean().item()))
        result.tokens_read.append(i + len(part) + 1)
    result.perplexity = math.exp(nll.mean().item())
    result.kept = cache.layers[0].physical_length()
    return result


@torch.no_grad()
def window_perplexity(model, ids: torch.Tensor, window: int, segment: int) -> list[float]:
    """The in-window reference: `ids` cut into segments of `segment` tokens (at most the
    model's context), each read with the full cache from its start; perplexity per
    `window` predicted tokens, in text order."""
    ids = ids.to(model.device)
    nll = []
    for start in range(0, len(ids) - 1, segment):
        piece = ids[start : start + segment]
        hidden = model.model(input_ids=piece[None]).last_hidden_state[0]
        for lo in range(0, len(piece) - 1, 512):  # the logits a slice at a time
            logits = model.lm_head(hidden[lo : min(lo + 512, len(piece) - 1)]).float()
            nll.append(_losses(logits, piece[lo + 1 : lo + 1 + len(logits)]))
    losses = torch.cat(nll).double()
    return [
        math.exp(losses[i : i + window].mean().item())
        for i in range(0, len(losses) - window + 1, window)
    ]
