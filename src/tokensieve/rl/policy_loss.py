"""The token-level clipped policy-gradient loss restricted to a `TokenSelection`.

Per token: ``max(-A·r, -A·clip(r, 1-ε_low, 1+ε_high))`` with ``r = π/π_old`` (PPO/GRPO;
``ε_high > ε_low`` is DAPO's clip-higher), counted only on selected tokens, plus
``kl_coef·|log r|`` on KL-Cov's penalty tokens. Normalised over the selected tokens
("selected") or over all valid response tokens ("all", so a 20% selection also
scales the gradient down, as verl's token-mean over the response mask does).
"""

from __future__ import annotations

import torch

from tokensieve.rl.token_masks import TokenSelection


def masked_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    valid: torch.Tensor,
    selection: TokenSelection,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    normalize: str = "selected",
    kl_coef: float = 1.0,
) -> torch.Tensor:
    """Scalar loss from ``[batch, len]`` tensors (see the module docstring)."""
    if normalize not in ("selected", "all"):
        raise ValueError("normalize must be 'selected' or 'all'")
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    per_token = torch.maximum(unclipped, clipped) * selection.policy
    if selection.penalty is not None:
        per_token = per_token + kl_coef * (log_prob - old_log_prob).abs() * selection.penalty
    counted = selection.policy if normalize == "selected" else valid
    if selection.penalty is not None and normalize == "selected":
        counted = counted | selection.penalty
    return per_token[valid].sum() / counted.sum().clamp_min(1)


def ppo_clipped(log_prob, old_log_prob, advantages, clip_low=0.2, clip_high=0.2):
    """Tokens where PPO's clip is active (Clip-Cov excludes them from its candidates)."""
    ratio = torch.exp(log_prob - old_log_prob)
    return -advantages * ratio.clamp(1 - clip_low, 1 + clip_high) > -advantages * ratio
