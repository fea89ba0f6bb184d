"""A transformers `Cache` that physically evicts tokens, asking a `KVPolicy` which to keep.

Each layer stores keys/values ``[batch, kv_heads, kept, head_dim]`` plus, per kept slot,
its original position and the policy's running score. The model sees a normal cache:

- By default ``get_seq_length()`` is the number of tokens *seen* (not kept), so
  `generate()` keeps giving new tokens their original positions. Keys are cached after
  RoPE, so kept keys keep their original rotation (as H2O's real-drop code and kvpress
  do), and ``get_mask_sizes()`` reports the physical length with an offset of seen − kept,
  so the causal mask of a new chunk treats every kept key as past and itself as causal.
- With ``pos_shift`` (the model's RoPE frequencies, `tokensieve.kv.rotation`), positions
  are ranks in the cache, as StreamingLLM and SirLLM define them: ``get_seq_length()`` is
  the number of tokens kept, a new token sits at that position, and kept keys are stored
  un-rotated and handed to attention rotated at their ranks.

Eviction runs after each layer's attention (the policy has seen the attention weights
it needs, handed over in chunks by `tokensieve.kv.attention`), so the tokens of the
current forward attended to the uncompressed cache and the compression applies from
the next forward on, the same post-attention semantics as kvpress. Every layer keeps
the same number of slots per KV head (different positions per head), so one causal
mask serves all layers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers.cache_utils import Cache, DynamicLayer

from tokensieve.errors import UserError
from tokensieve.kv.attention import SCORING
from tokensieve.kv.policy import Budget, KVPolicy, Seen
from tokensieve.kv.rotation import rope_frequencies, rotate
from tokensieve.lm import attention_modules
from tokensieve.models import passed_cache, with_cache

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo", "smollm3")


SLACK = 8  # free slots beyond the budget: a decode step or a short input lands in place


class CompressedLayer(DynamicLayer):
    """One layer's keys and values, their original positions and policy scores.

    Keys and values live in a buffer with room for the budget plus `SLACK` slots: a new
    token is written into the next free slot and an evicted slot is overwritten by a
    kept one from the end (one in, one out), so decoding never copies the cache. Slots
    are therefore not in position order once anything has moved; `positions` says which
    token each holds, and the cache ranks, protects sinks and the recent window, and
    re-rotates (pos_shift) by position, never by slot.
    """

    def __init__(self, pos_shift: torch.Tensor | None = None):
        self._keys: torch.Tensor | None = None  # [batch, kv_heads, capacity, head_dim]
        self._values: torch.Tensor | None = None
        self.length = 0  # slots in use
        super().__init__()
        self.pos_shift = pos_shift  # RoPE inverse frequencies when positions are ranks
        self.cumulative_length = 0
        self.positions: torch.Tensor | None = None  # [batch, kv_heads, kept], long
        self.scores: torch.Tensor | None = None  # [batch, kv_heads, kept], float32
        self.in_order = True  # slots sorted by position (nothing moved yet)
        self.calls = 0  # forwards seen by this layer (0 = prefill)
        self.last_query_length = 0

    # transformers reads and sets `keys`/`values` (whole-tensor operations such as batch
    # repetition replace the buffer); the live slots are a view of the buffer
    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._keys is None else self._keys[:, :, : self.length]

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        self._keys = value
        self.length = value.shape[2] if value is not None and value.dim() == 4 else 0

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._values is None else self._values[:, :, : self.length]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        self._values = value

    def held_bytes(self) -> int:
        """Bytes of the key and value buffers (the kept slots and the free ones)."""
        if self._keys is None or self._keys.dim() != 4:
            return 0
        return (self._keys.numel() + self._values.numel()) * self._keys.element_size()

    def _append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        new, start = key_states.shape[2], self.length
        capacity = 0 if self._keys is None or self._keys.dim() != 4 else self._keys.shape[2]
        if start + new > capacity:  # grow (geometrically, for caches that keep growing)
            size = max(start + new + SLACK, capacity + capacity // 4)
            keys = key_states.new_empty(*key_states.shape[:2], size, key_states.shape[3])
            values = value_states.new_empty(*value_states.shape[:2], size, value_states.shape[3])
            if start:
                keys[:, :, :start] = self._keys[:, :, :start]
                values[:, :, :start] = self._values[:, :, :start]
            self._keys, self._values = keys, values
        self._keys[:, :, start : start + new] = key_states
        self._values[:, :, start : start + new] = value_states
        self.length = start + new

    def position_order(self) -> torch.Tensor | None:
        """Slots by position ``[batch, kv_heads, kept]``, or None while they are in order."""
        return None if self.in_order else self.positions.argsort(dim=-1)

    def ranks(self) -> torch.Tensor:
        """Each slot's rank by position among the kept ones ``[batch, kv_heads, kept]``."""
        order = self.position_order()
        if order is None:
            return torch.arange(self.length, device=self.positions.device)
        return order.argsort(dim=-1)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        batch, heads, new = key_states.shape[:3]
        device = key_states.device
        if self.pos_shift is not None:  # rotated at ranks kept.. by this forward: undo
            start = self.physical_length()
            at = torch.arange(start, start + new, device=device)
            key_states = rotate(key_states, -at, self.pos_shift)
        positions = torch.arange(self.cumulative_length, self.cumulative_length + new,
                                 device=device)  # fmt: skip
        positions = positions.expand(batch, heads, new)
        zeros = torch.zeros(batch, heads, new, dtype=torch.float32, device=device)
        if self.positions is None:
            self.positions, self.scores = positions.clone(), zeros
        else:
            self.positions = torch.cat([self.positions, positions], dim=-1)
            self.scores = torch.cat([self.scores, zeros], dim=-1)
        self.cumulative_length += new
        self.last_query_length = new
        self._append(key_states, value_states)
        if self.pos_shift is not None:
            return rotate(self.keys, self.ranks(), self.pos_shift), self.values
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.physical_length() if self.pos_shift is not None else self.cumulative_length

    def physical_length(self) -> int:
        return 0 if self.positions is None else int(self.positions.shape[-1])

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        kept = self.physical_length()
        if self.pos_shift is not None:
            return kept + query_length, 0
        return kept + query_length, self.cumulative_length - kept

    def keep(self, indices: torch.Tensor) -> None:
        """Keep slots `indices` ``[batch, kv_heads, k]`` (any order), freeing the rest in
        place: each kept slot beyond the first k moves into a freed one among them."""
        total, k = self.length, indices.shape[-1]
        if k >= total:
            return
        device = indices.device
        kept = torch.zeros(*indices.shape[:2], total, dtype=torch.bool, device=device)
        kept.scatter_(-1, indices, True)
        slot = torch.arange(total, device=device)
        pairs = min(total - k, k)  # as many kept slots past k as freed slots below k
        # the movers (kept, past k) and the holes (freed, below k), ascending; the same
        # count per head, padded with slot k, which moves onto itself and is dropped
        movers = torch.where(kept[..., k:], slot[k:], total).sort(dim=-1).values[..., :pairs]
        holes = torch.where(kept[..., :k], total, slot[:k]).sort(dim=-1).values[..., :pairs]
        source = torch.where(movers < total, movers, k)
        target = torch.where(movers < total, holes, k)
        if bool((movers < total).any()):
            self.in_order = False
            index = source[..., None].expand(-1, -1, -1, self._keys.shape[-1])
            at = target[..., None].expand_as(index)
            self._keys.scatter_(2, at, self._keys.gather(2, index))
            self._values.scatter_(2, at, self._values.gather(2, index))
            self.positions = self.positions.scatter(2, target, self.positions.gather(2, source))
            self.scores = self.scores.scatter(2, target, self.scores.gather(2, source))
        self.positions, self.scores = self.positions[..., :k], self.scores[..., :k]
        self.length = k
        if self._keys.shape[2] > k + 4 * SLACK:  # after a prompt: give the memory back
            self._keys = self._keys[:, :, : k + SLACK].clone()
            self._values = self._values[:, :, : k + SLACK].clone()

    def drop_one(self, victims: torch.Tensor) -> None:
        """Free one slot per KV head, `victims` ``[batch, kv_heads]``: the last slot moves
        into it (one in, one out at a decode step; nothing else is touched)."""
        last = self.length - 1
        at = victims[..., None]  # [b, kv, 1]
        index = at[..., None].expand(-1, -1, 1, self._keys.shape[-1])
        self._keys.scatter_(2, index, self._keys[:, :, last : last + 1])
        self._values.scatter_(2, index, self._values[:, :, last : last + 1])
        self.positions = self.positions.scatter(2, at, self.positions[..., last:])[..., :last]
        self.scores = self.scores.scatter(2, at, self.scores[..., last:])[..., :last]
        self.length = last
        if self.in_order and bool((victims != last).any()):
            self.in_order = False

    def reset(self) -> None:
        """Empty, as new (transformers' `Cache.reset`): slots, positions and scores."""
        super().reset()
        self.positions = self.scores = None
        self.in_order, self.calls, self.last_query_length = True, 0, 0

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a compressed cache cannot be cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.positions is not None:
            self.positions = self.positions.repeat_interleave(repeats, dim=0)
            self.scores = self.scores.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.positions is not None:
            self.positions, self.scores = self.positions[indices], self.scores[indices]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)


class CompressedCache(Cache):
    """The cache to pass to the model (`tokensieve.models.with_cache`); eviction needs
    `compression(model, cache)`. `pos_shift`: the model's RoPE inverse frequencies
    (`tokensieve.kv.rotation.rope_frequencies(model)`) to give kept keys their rank in the
    cache as position; None (default) keeps their positions in the text."""

    def __init__(self, config, policy: Budget, pos_shift: torch.Tensor | None = None):
        model_type = getattr(config, "model_type", "")
        kinds = getattr(config, "layer_types", None)
        partial = (
            any(kind != "full_attention" for kind in kinds)
            if kinds
            else getattr(config, "sliding_window", None) is not None
        )
        if partial:
            raise UserError(
                f"{model_type} uses sliding-window or linear attention in some layers, which "
                "the compressed cache does not serve; it serves decoders with full attention "
                f"in every layer ({', '.join(SUPPORTED)})"
            )
        layers = [CompressedLayer(pos_shift) for _ in range(config.num_hidden_layers)]
        super().__init__(layers=layers)
        self.policy = policy
        self.rope = pos_shift  # RoPE inverse frequencies, for pos_shift or a policy's needs
        self.budget: int | None = None
        self.prompt_length: int | None = None
        self.policy_state = policy.new_state()  # the policy's own, typed, for this stream
        self.observed = False  # set when the policy has seen attention weights
        self.active = False  # set inside `compression(model, cache)`, where eviction happens
        self._warned = False

    def update(self, *args, **kwargs):
        if not self.active and not self._warned:
            # Without compression()'s hooks the layers only append: a silent full cache.
            warnings.warn(
                "this CompressedCache is used outside `compression(model, cache)`, so "
                "nothing is evicted; run the model inside `with compression(model, cache):`",
                stacklevel=2,
            )
            self._warned = True
        return super().update(*args, **kwargs)

    def reset(self) -> None:
        """Empty every layer and start the budget and the policy's state over (a seeded
        policy's random generator goes on where it was)."""
        super().reset()
        self.budget = self.prompt_length = None
        self.policy_state = self.policy.new_state()
        self.observed = False

    def kv_bytes(self) -> int:
        """Bytes of the kept keys and values (the memory eviction frees; each layer's
        buffer holds room for a few more, `held_bytes`)."""
        return sum(
            layer.keys.numel() * layer.keys.element_size() * 2
            for layer in self.layers
            if layer.is_initialized
        )

    def seen_tokens(self) -> int:
        """Tokens read so far (kept or not)."""
        return self.layers[0].cumulative_length

    def kept_positions(self) -> list[torch.Tensor]:
        """Per layer, the original positions kept, ``[batch, kv_heads, kept]``, sorted."""
        return [layer.positions.sort(dim=-1).values for layer in self.layers
                if layer.positions is not None]  # fmt: skip

    def fix_budget(self, prompt_length: int) -> int:
        """Fix the budget from a prompt that will be read in several forwards."""
        self.prompt_length = prompt_length
        self.budget = self.policy.resolve_budget(prompt_length)
        return self.budget

    def resolve_budget(self) -> int:
        """Fix the budget once, from the length of the first input (the prompt)."""
        if self.budget is None:
            self.prompt_length = self.layers[0].cumulative_length
            self.budget = self.policy.resolve_budget(self.prompt_length)
        return self.budget

    def seen(self, layer_idx: int, attention: torch.Tensor | None = None) -> Seen:
        layer = self.layers[layer_idx]
        return Seen(layer_idx, layer.calls, layer.keys.shape[1], attention, self.policy_state)

    def wants_attention(self, layer_idx: int) -> bool:
        """Does this forward's attention matter to the policy? (otherwise attention runs
        without weights, through SDPA)"""
        return self.policy.reads == "attention" and self._compresses_now(layer_idx)

    def _compresses_now(self, layer_idx: int) -> bool:
        when = self.policy.compresses
        return when == "every step" or (when == "prefill" and self.layers[layer_idx].calls == 0)

    def observe(self, layer_idx: int, attention: torch.Tensor) -> None:
        """Let the policy score the layer's slots from some query rows' attention (in
        position order for a policy whose scores depend on the order, `ordered`)."""
        layer = self.layers[layer_idx]
        if attention.shape[-1] < layer.length:  # a chunk's rows see no later key: weight 0
            attention = torch.nn.functional.pad(attention, (0, layer.length - attention.shape[-1]))
        order = layer.position_order() if self.policy.ordered else None
        if order is None:
            layer.scores = self.policy.score(layer.scores, self.seen(layer_idx, attention))
        else:
            group = attention.shape[1] // order.shape[1]
            columns = order.repeat_interleave(group, dim=1)[:, :, None, :]
            attention = attention.gather(-1, columns.expand(-1, -1, attention.shape[2], -1))
            scores = self.policy.score(layer.scores.gather(-1, order),
                                       self.seen(layer_idx, attention))  # fmt: skip
            layer.scores = torch.empty_like(scores).scatter_(-1, order, scores)
        self.observed = True

    def after_attention(self, layer_idx: int, attention: torch.Tensor | None) -> None:
        """After a layer's attention (already observed when `attention` is None), evict
        to the budget when the policy compresses now."""
        layer = self.layers[layer_idx]
        self.resolve_budget()
        if attention is not None and self.wants_attention(layer_idx):
            self.observe(layer_idx, attention)
        if self._compresses_now(layer_idx):
            self.evict(layer_idx)
        layer.calls += 1

    def after_forward(self, input_ids: torch.Tensor, logits: torch.Tensor) -> None:
        """For policies reading logits: the new tokens' scores go to every layer and head;
        after an input (more than one token) those compressing per input compress."""
        scores = self.policy.token_scores(self.policy_state, input_ids, logits)
        new = input_ids.shape[1]
        for layer in self.layers:
            layer.scores[..., -new:] = scores[:, None, :].to(layer.scores.device)
        if self.policy.compresses == "per input" and new > 1:
            for index, layer in enumerate(self.layers):
                layer.scores = self.policy.score(layer.scores, self.seen(index))
                self.evict(index)

    def before_forward(self, input_ids: torch.Tensor) -> None:
        """For policies compressing before an input (SirLLM as its authors run it): make
        room for what comes — the input, and `reserve` generated tokens after an input of
        more than one token — so the cache never passes the budget; each input decays the
        stored scores once. The first input enters whole (the budget is fixed from it)."""
        if self.budget is None or not self.layers[0].is_initialized:
            return
        new = input_ids.shape[1]
        room = self.budget - new - (getattr(self.policy, "reserve", 0) if new > 1 else 0)
        room = max(room, self.policy.sink, 0)
        for index, layer in enumerate(self.layers):
            if new > 1:
                layer.scores = self.policy.score(layer.scores, self.seen(index))
            self.evict(index, room)

    def evict(self, layer_idx: int, size: int | None = None) -> None:
        """Keep the sink, the recent window and the top-ranked rest, per KV head: `size`
        slots (default: the budget)."""
        layer = self.layers[layer_idx]
        budget = self.resolve_budget() if size is None else size
        kept = layer.physical_length()
        if kept <= budget:
            return
        recent = min(self.policy.recent_slots(budget), max(budget - self.policy.sink, 0))
        if kept == budget + 1 and type(self.policy).rank is KVPolicy.rank:
            # one out (a decode step): the lowest score outside the sinks and the recent
            # window, found by position (they are the first and the newest tokens), so
            # nothing is sorted or copied
            positions = layer.positions
            protected = positions < self.policy.sink
            if recent:
                protected |= positions >= layer.cumulative_length - recent
            scores = layer.scores.float().masked_fill(protected, math.inf)
            layer.drop_one(scores.argmin(dim=-1))
            return
        # ranked in position order, as when slots were kept sorted: the sinks are the
        # first, the recent window the last, ties and random draws fall as they did
        order = layer.position_order()
        stored = layer.scores if order is None else layer.scores.gather(-1, order)
        scores = self.policy.rank(stored).clone().float()
        if self.policy.sink:
            scores[..., : self.policy.sink] = math.inf
        if recent:
            scores[..., kept - recent :] = math.inf
        indices = scores.topk(budget, dim=-1).indices.sort(dim=-1).values
        layer.keep(indices if order is None else order.gather(-1, indices))


def read_in_chunks(model, cache, ids: list[int]) -> None:
    """Read a prompt as several inputs, each evicting before it enters (SirLLM as its
    authors run it): the budget is a share of the whole prompt, the chunk leaves room for
    the answer, so the cache never holds more than the budget."""
    budget = cache.fix_budget(len(ids) + 1)
    reserve = getattr(cache.policy, "reserve", 0)
    chunk = (budget - reserve - cache.policy.sink) // 2
    if chunk < 1:
        raise UserError(
            f"a budget of {budget} tokens leaves no room to read the prompt beside "
            f"{reserve} new tokens and {cache.policy.sink} sinks; raise --budget "
            "or lower --max-new-tokens"
        )
    for start in range(0, len(ids), chunk):
        piece = torch.tensor([ids[start : start + chunk]], device=model.device)
        model(input_ids=piece, **with_cache(cache), use_cache=True, logits_to_keep=0)


def attention_layers(model) -> list[torch.nn.Module]:
    """`tokensieve.lm.attention_modules`, naming the supported models on failure."""
    try:
        return attention_modules(model)
    except UserError as exc:
        raise UserError(f"{exc}; supported: {', '.join(SUPPORTED)}") from None


def follows_one_device(model) -> None:
    """The cache allocates on the model's device: refuse a model spread over several
    devices (or left on the meta device), which one cache cannot follow."""
    devices = {p.device for p in model.parameters()}
    if len(devices) > 1 or any(d.type == "meta" for d in devices):
        names = ", ".join(sorted(str(d) for d in devices))
        raise UserError(
            f"the compressed cache lives on one device; this model is spread over {names} "
            "(load it on one device, e.g. --device cpu)"
        )


@contextmanager
def compression(model, cache: CompressedCache) -> Iterator[CompressedCache]:
    """Let `cache` see each layer's attention while the model runs inside this block.

    Policies that score with attention switch the model to `tokensieve.kv.attention`'s
    scoring attention (equal to eager, weights handed over in chunks) for the duration.
    """

    def hook(module, args, kwargs, output):
        if passed_cache(kwargs) is cache:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            wanted = cache.wants_attention(module.layer_idx)
            cache.after_attention(module.layer_idx, weights)
            if wanted and not cache.observed:
                raise RuntimeError("the policy saw no attention weights")

    previous = model.config._attn_implementation
    modules = attention_layers(model)
    follows_one_device(model)
    if getattr(cache.policy, "needs_rope", False) and cache.rope is None:
        cache.rope = rope_frequencies(model, f"{cache.policy.name}'s content-only ranking")
    if cache.policy.compresses == "never" and hasattr(cache.policy, "select"):
        from tokensieve.kv.selection import IMPLEMENTATION

        model.set_attn_implementation(IMPLEMENTATION)
    elif cache.policy.reads == "attention":
        model.set_attn_implementation(SCORING)
    for module in modules:
        module._tokensieve_cache = cache
    cache.active = True

    def logits_hook(module, args, kwargs, output):
        if passed_cache(kwargs) is cache:
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            if input_ids is not None:
                cache.after_forward(input_ids, output.logits)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in modules]

    def all_logits(module, args, kwargs):
        if passed_cache(kwargs) is cache:  # generate() keeps only the last row
            kwargs["logits_to_keep"] = 0
        return args, kwargs

    if cache.policy.reads == "logits":
        handles.append(model.register_forward_pre_hook(all_logits, with_kwargs=True))
        handles.append(model.register_forward_hook(logits_hook, with_kwargs=True))

    def make_room(module, args, kwargs):
        if passed_cache(kwargs) is cache:
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            if input_ids is not None:
                cache.before_forward(input_ids)
        return args, kwargs

    if cache.policy.compresses == "before input":
        handles.append(model.register_forward_pre_hook(make_room, with_kwargs=True))
    try:
        yield cache
    finally:
        for handle in handles:
            handle.remove()
        for module in modules:
            module.__dict__.pop("_tokensieve_cache", None)
        cache.active = False
        if model.config._attn_implementation != previous:
            model.set_attn_implementation(previous)
