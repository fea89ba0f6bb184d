"""Re-rotation of cached keys to their rank in the cache ("pos-shift").

StreamingLLM (Xiao et al., ICLR 2024, §3.2 "Rolling KV cache with attention sinks") and
SirLLM (Yao et al., ACL 2024) assign positions *within the cache*: with keys 0..n-1 kept,
a new token sits at position n whatever its place in the text, and every kept key is
rotated at its rank. Positions then never pass the cache size, which is what lets a model
read text far longer than its context window. The authors' code (mit-han-lab/
streaming-llm, ``pos_shift/modify_llama.py``) caches keys *before* RoPE and rotates the
whole cache at ranks 0..n-1 at every forward; tokensieve does the same: a layer under
pos-shift stores un-rotated keys (the post-RoPE keys transformers hands the cache are
rotated back once, by their position in that forward) and returns them rotated at their
ranks. Eviction then needs no re-rotation, and nothing accumulates rounding.

The rotation is the rotate-half RoPE of Llama-family models (`rotate_half` in
transformers' ``modeling_llama``), on the full head dimension in every layer; a model
whose positions are not that (absolute position embeddings, partial rotary, layers
without RoPE) is refused with a `UserError`.
"""

from __future__ import annotations

import torch

from tokensieve.errors import UserError


def rope_frequencies(model, purpose: str = "re-rotation (pos-shift)") -> torch.Tensor:
    """The model's RoPE inverse frequencies ``[head_dim / 2]``, after checking that every
    layer rotates its whole head dimension with them (`purpose` names the need in the
    error)."""
    config = model.config
    name = getattr(config, "model_type", type(model).__name__)
    rotary = next((m for m in model.modules() if hasattr(m, "inv_freq")), None)
    if rotary is None:
        raise UserError(
            f"{purpose} needs RoPE positions; {name} has none (its positions "
            "are absolute or learned)"
        )
    if getattr(rotary, "rope_type", "default") in ("dynamic", "longrope"):
        raise UserError(
            f"{purpose} needs fixed RoPE frequencies; {name} rescales them with "
            "the length (dynamic/longrope)"
        )
    inv_freq = rotary.inv_freq.detach()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    no_rope = getattr(config, "no_rope_layers", None)
    if 2 * inv_freq.numel() != head_dim or (no_rope is not None and not all(no_rope)):
        raise UserError(
            f"{purpose} needs RoPE on the whole head in every layer; {name} "
            "rotates part of the head or skips RoPE in some layers"
        )
    return inv_freq.float()


def rotate(keys: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """`keys` ``[batch, heads, n, dim]`` rotated by `positions` (broadcastable to
    ``[batch, heads, n]``; negative rotates back), in float32, returned in keys' dtype."""
    freqs = positions.to(torch.float32)[..., None] * inv_freq.to(keys.device)
    angles = torch.cat([freqs, freqs], dim=-1)
    x = keys.float()
    half = x.shape[-1] // 2
    rotated_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * angles.cos() + rotated_half * angles.sin()).to(keys.dtype)
