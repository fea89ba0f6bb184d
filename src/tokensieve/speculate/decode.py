"""Guess, verify in one forward, keep the longest correct path: lossless greedy decoding.

One loop serves every drafter (Token Recycling, Lookahead, prompt lookup): prefill the
prompt; then, at each step, ask the drafter for a tree rooted at the last committed
token, read the whole tree in one forward (tree attention mask, positions by depth),
accept the longest path the model's own argmax agrees with plus one "bonus" token, drop
the rejected nodes from the KV cache and let the drafter learn from every node's logits.
By induction the committed text is exactly greedy decoding's (the verification every
tree-based method shares; Token Recycling, Luo et al. 2024, Fig. 2), up to floating point
near-ties: a tree forward multiplies matrices of another shape than a one-token step, so
logits may differ in the last bits (on SmolLM2 in float32: ≤ 5e-5 with sdpa, 1.1e-4 with
eager attention; shared/specs/speculate.md §2.5).

Sampling is not offered: a lossless tree version of speculative sampling is another
algorithm (multi-draft rejection), and neither reference implements it.

Cache layout, the invariant of the loop: the cache holds every committed token but the
last; the last one (the root) is node 0 of the next tree, so one forward gives both the
root's logits and the drafts'. After verification only the root and the accepted nodes
stay; their keys were rotated at ``past + depth``, exactly where sequential decoding
would put them, so moving their rows needs no re-rotation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tokensieve.errors import UserError
from tokensieve.lm import check_context
from tokensieve.models import model_display_name, with_cache
from tokensieve.speculate.drafter import Drafter
from tokensieve.speculate.tree import Draft, accepted_path, attention_mask


@dataclass
class SpeculationResult:
    """What one speculative generation did. `committed[s]` is how many tokens forward `s`
    gave (the prefill gives the first token; each later forward the accepted drafts and
    the bonus), `drafted[s]` how many tokens beside the root it read (draft nodes and
    side tokens; 0 for the prefill). `free[i]` says whether new token i was a draft the
    forward accepted (True) or the forward's own prediction (False: it needed that
    forward)."""

    prompt_ids: list[int]
    tokens: list[int]
    committed: list[int] = field(default_factory=list)
    drafted: list[int] = field(default_factory=list)
    free: list[bool] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def forwards(self) -> int:
        return len(self.committed)

    @property
    def accepted_per_forward(self) -> float:
        """Mean tokens committed per forward, prefill included (1.0 for plain decoding)."""
        return len(self.tokens) / max(self.forwards, 1)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("nan")

    def committed_per_token(self) -> list[int]:
        """For each new token, how many tokens the forward that gave it committed."""
        out = []
        for count in self.committed:
            out.extend([count] * count)
        return out


def check_tree_fits(
    model,
    prompt_tokens: int,
    max_new_tokens: int,
    drafter: Drafter,
    hint: str = "shorten the prompt or lower --max-new-tokens",
) -> None:
    """Refuse a run whose tree or positions would not fit the model's context."""
    if max_new_tokens < 1:
        raise UserError(f"`max_new_tokens` must be at least 1, got {max_new_tokens}")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and drafter.max_nodes + 1 > limit:
        raise UserError(
            f"the draft tree has {drafter.max_nodes} nodes but {model_display_name(model)} "
            f"reads at most {limit} tokens; choose a smaller `tree_size`"
        )
    check_context(model, prompt_tokens + max_new_tokens + drafter.max_depth, hint)


def new_cache(model):
    """An empty cache whose layers can be compacted (plain, full-attention layers)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    kinds = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer}
    if kinds:
        raise UserError(
            f"speculative decoding needs full-attention cache layers; "
            f"{model_display_name(model)} has {', '.join(sorted(kinds))}"
        )
    return cache


def keep_positions(cache, past: int, nodes: Sequence[int]) -> None:
    """Keep the first `past` cached positions and, after them, the tree nodes `nodes`
    (increasing indices into the tree just read), in that order; drop the rest. Copies
    only the kept tree rows; the cache beyond them is cut."""
    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name)
            rows = torch.tensor([past + i for i in nodes], dtype=torch.long, device=tensor.device)
            kept = tensor.index_select(-2, rows)
            tensor = tensor[..., : past + len(nodes), :]
            tensor[..., past:, :] = kept
            setattr(layer, name, tensor)


def _forward(model, cache, tokens, positions, mask, logits_to_keep: int = 0) -> torch.Tensor:
    """One forward; ``[n, vocab]`` float32 logits (the last `logits_to_keep` rows if set)."""
    device = model.device
    options = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
    out = model(
        input_ids=torch.tensor([tokens], device=device),
        position_ids=torch.tensor([positions], device=device),
        attention_mask=mask,
        **with_cache(cache),
        use_cache=True,
        **options,
    )
    return out.logits[0].float()


def verify(model, cache, draft: Draft, past: int) -> torch.Tensor:
    """Read `draft` after `past` cached tokens in one forward; returns ``[q, vocab]``
    float32 logits (q = `draft.query_tokens`), row i < len(draft) being the next-token
    logits after the path to tree node i, the rows after it the side tokens'. The cache
    grows by q rows (call `keep_positions` next)."""
    tokens = list(draft.tokens)
    positions = [past + d for d in draft.depths()]
    if draft.side is not None:
        tokens += draft.side.tokens
        positions += [past + offset for offset in draft.side.offsets]
    if len(tokens) == 1:  # a plain step: the default causal mask is the same and cheaper
        return _forward(model, cache, tokens, positions, None)
    mask = attention_mask(draft, past, model.dtype, model.device)
    return _forward(model, cache, tokens, positions, mask)


@torch.inference_mode()
def speculative_generate(
    model,
    prompt_ids: Sequence[int],
    drafter: Drafter,
    max_new_tokens: int,
    eos_token_ids: Sequence[int] = (),
    follow: Sequence[int] | None = None,
    progress: bool = False,
) -> SpeculationResult:
    """Greedy decoding of `max_new_tokens` after `prompt_ids`, drafted by `drafter` and
    verified tree by tree; stops after the first of `eos_token_ids`.

    `follow` replays given tokens instead of the model's choices (what `inspect` does to
    show which tokens of a text the drafter would have had for free): acceptance then
    compares drafts with the text, and the run ends with it.
    """
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise UserError("the prompt is empty: speculative decoding continues a prompt")
    if follow is not None:
        follow = [int(t) for t in follow]
        max_new_tokens = len(follow)
        check_context(model, len(prompt) + len(follow), "analyse fewer tokens")
        if follow:  # the last drafts reach up to max_depth positions past the text's end
            check_tree_fits(model, len(prompt), len(follow), drafter, "analyse fewer tokens")
    else:
        check_tree_fits(model, len(prompt), max_new_tokens, drafter)
    eos = {int(t) for t in eos_token_ids}
    bar = _progress(max_new_tokens, progress)
    started = time.perf_counter()

    cache = new_cache(model)
    # logits of the prompt's last positions only, as many as the drafter learns from: a
    # [prompt, vocab] tensor would be 0.8 GB for 4k tokens of a 49k vocabulary
    wanted = min(len(prompt), max(1, drafter.prompt_logits))
    prompt_logits = _forward(model, cache, prompt, list(range(len(prompt))), None, wanted)
    drafter.start(prompt, prompt_logits)
    first = follow[0] if follow is not None else int(prompt_logits[-1].argmax())
    result = SpeculationResult(prompt, [first], committed=[1], drafted=[0], free=[False])
    past = len(prompt)  # the cache holds the prompt; `first` is the next root
    bar.update(1)
    ended = first in eos
    while len(result.tokens) < max_new_tokens and not ended:
        draft = drafter.draft(prompt + result.tokens)
        if draft.tokens[0] != result.tokens[-1]:  # the cache layout rests on it
            raise ValueError(f"{drafter.name} drafted a tree whose root is not the last token")
        logits = verify(model, cache, draft, past)
        predictions = logits[: len(draft)].argmax(-1).tolist()
        if follow is not None:  # the text's token after a node at depth d: follow[done + d]
            done = len(result.tokens)
            predictions = [_followed(follow, done + depth) for depth in draft.depths()]
        path = accepted_path(draft, predictions)
        bonus = predictions[path[-1]]
        keep_positions(cache, past, path)
        past += len(path)
        drafter.observe(draft, logits)
        new = [draft.tokens[i] for i in path[1:]] + ([bonus] if bonus is not None else [])
        result.tokens.extend(new)
        ended = any(token in eos for token in new)  # an end token may come mid-step
        result.free.extend([True] * (len(path) - 1) + [False] * (len(new) - len(path) + 1))
        result.committed.append(len(new))
        result.drafted.append(draft.query_tokens - 1)
        bar.update(len(new))
    result.seconds = time.perf_counter() - started
    bar.close()
    _truncate(result, max_new_tokens, eos)
    return result


def _followed(follow: list[int], index: int) -> int | None:
    return follow[index] if index < len(follow) else None


def _truncate(result: SpeculationResult, limit: int, eos: set[int]) -> None:
    """One step may commit past the limit or past an end token: cut after either, and
    shorten the last step's count to match."""
    end = limit
    for i, token in enumerate(result.tokens[:limit]):
        if token in eos:
            end = i + 1
            break
    extra = len(result.tokens) - end
    del result.tokens[end:]
    del result.free[end:]
    while extra > 0:
        cut = min(extra, result.committed[-1])
        result.committed[-1] -= cut
        extra -= cut
        if result.committed[-1] == 0:
            result.committed.pop()
            result.drafted.pop()


def _progress(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", desc="speculate", disable=not show, leave=False)
