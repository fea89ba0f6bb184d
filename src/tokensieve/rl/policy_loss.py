"""The token-level policy-gradient loss restricted to a `TokenSelection`: the loss the
trainer runs (`ForkingTokenGRPOTrainer._compute_loss` calls it), so the loss the tests
check is the one that trains.

Per token, with ``r = π/π_old``:

- clipped (PPO/GRPO; ``ε_high > ε_low`` is DAPO's clip-higher):
  ``max(-A·r, -A·clip(r, 1-ε_low, 1+ε_high))``, counted on selected tokens;
- unclipped (``clip=False``, KL-Cov as its reference computes it, PRIME-RL's
  Entropy-Mechanism-of-RL ``compute_policy_loss_kl_cov``): ``-A·r``;

plus ``kl_coef·|log r|`` on KL-Cov's penalty tokens. The sum is divided by the number
of valid response tokens (``"all"``: as verl's token-mean over the response mask, and
TRL's default ``dapo`` loss, so a 20% selection also scales the gradient down) or of
selected tokens (``"selected"``: a mean over the tokens trained on, as the 80/20
authors' code averages, ``compute_policy_loss_vanilla``; their paper's objective divides
by all response tokens, i.e. ``"all"``: see `tokensieve.rl.token_masks`).
``denominator`` replaces the valid-token count (the trainer passes TRL's, which spans
the whole generation batch); "selected" scales it by the selected share.
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
    clip: bool = True,
    normalize: str = "selected",
    kl_coef: float = 1.0,
    denominator: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Scalar loss from ``[batch, len]`` tensors (see the module docstring)."""
    if normalize not in ("selected", "all"):
        raise ValueError("normalize must be 'selected' or 'all'")
    ratio = torch.exp(log_prob - old_log_prob)
    per_token = -advantages * ratio
    if clip:
        clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
        per_token = torch.maximum(per_token, clipped)
    per_token = per_token * selection.policy
    if selection.penalty is not None:
        per_token = per_token + kl_coef * (log_prob - old_log_prob).abs() * selection.penalty
    total = per_token[valid].sum()
    count = valid.sum().clamp_min(1) if denominator is None else denominator
    if normalize == "selected":
        counted = selection.policy & valid
        if selection.penalty is not None:
            counted = counted | (selection.penalty & valid)
        count = count * counted.sum() / valid.sum().clamp_min(1)
    return total / torch.as_tensor(count, dtype=total.dtype).clamp_min(1e-12)


def ppo_clipped(log_prob, old_log_prob, advantages, clip_low=0.2, clip_high=0.2):
    """Tokens where PPO's clip is active (Clip-Cov excludes them from its candidates)."""
    ratio = torch.exp(log_prob - old_log_prob)
    return -advantages * ratio.clamp(1 - clip_low, 1 + clip_high) > -advantages * ratio
