"""Token-mask strategies: which response tokens the policy gradient is computed on.

"Beyond the 80/20 Rule" (Wang et al., 2025, arXiv:2506.01939) restricts the update to the
top-20% entropy tokens of the batch (``TopEntropy(0.2)``) and ablates with the other
80% (``BottomEntropy(0.8)``); ``RandomTokens`` is the matched-size control. Clip-Cov and
KL-Cov ("The Entropy Mechanism of RL for Reasoning LMs") act on tokens whose
covariance ``(A - mean A)·(log π - mean log π)`` over the batch's valid tokens is high:
Clip-Cov drops ``max(⌊ratio·N⌋, 1)`` tokens (N: the valid tokens), drawn uniformly from
those with covariance in the open band ``(low, high)`` that PPO has not already clipped,
from the gradient; KL-Cov keeps every token and adds an ``|log π - log π_old|`` penalty
on the top ``max(⌊ratio·N⌋, 1)`` by covariance. Both as the paper defines them and its
reference computes them, PRIME-RL's Entropy-Mechanism-of-RL ``verl/trainer/ppo/core_algos.py``
(``compute_policy_loss_clip_cov``, ``compute_policy_loss_kl_cov``).

All strategies see batch tensors ``[batch, response_len]`` and a ``valid`` mask
(response tokens, not prompt or padding), and never select an invalid token. The
trainer's entropies are TRL's, at the rollout temperature over the full vocabulary (the
overlap analysis, `tokensieve.rl.analysis`, scores at temperature 1). Quantiles are
taken over the valid tokens of the batch the loss sees (the mini-batch; with gradient
accumulation, each micro-batch; with several processes the trainer uses the global
quantile instead), with exactly ``ceil(rho·n)`` tokens (ties by position), the same rule
as `tokensieve.scoring.forking_tokens`; the paper's τ is the quantile over the batch.

Each strategy names the loss denominator its method uses (``normalize``). For the
entropy masks we follow the 80/20 authors' code, not their paper: the paper's objective
(J_HighEnt, arXiv:2506.01939) keeps DAPO's 1/Σ|oᵢ|, all response tokens, with the entropy
indicator inside the sum; their code (Beyond-the-80-20-Rule-RLVR,
``verl/trainer/ppo/core_algos.py``, ``compute_policy_loss_vanilla``) aggregates over
``response_mask * entropy_top_mask``, a mean over the selected tokens, and their runs
are that code's. ``normalize="all"`` is the paper's equation (and TRL's
``top_entropy_quantile`` flag). The random control uses the selected tokens too; all
response tokens for ``AllTokens``, Clip-Cov and KL-Cov (verl's ``token-mean``, as
PRIME-RL's Entropy-Mechanism-of-RL recipes).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensieve.errors import UserError
from tokensieve.scoring import forking_tokens


@dataclass
class TokenSelection:
    """policy: tokens whose policy-gradient term counts; penalty: tokens given KL-Cov's
    ``|log ratio|`` penalty (None: none)."""

    policy: torch.Tensor
    penalty: torch.Tensor | None = None


def _check_rho(rho: float) -> float:
    if not 0.0 < rho <= 1.0:
        raise UserError(f"rho must be in (0, 1], got {rho}")
    return rho


def _check_ratio(ratio: float) -> float:
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"`ratio` must be in (0, 1], got {ratio}")
    return ratio


def _count(rho: float, n: int) -> int:
    return min(n, math.ceil(rho * n - 1e-9))


class TokenMask(ABC):
    normalize: ClassVar[str] = "all"  # the loss denominator of this mask's method

    @abstractmethod
    def select(
        self,
        *,
        valid: torch.Tensor,
        entropy: torch.Tensor | None = None,
        log_prob: torch.Tensor | None = None,
        advantages: torch.Tensor | None = None,
        clipped: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TokenSelection:
        """Tokens to train on, from ``[batch, len]`` tensors (see the module docstring)."""


class AllTokens(TokenMask):
    def select(self, *, valid, **_) -> TokenSelection:
        return TokenSelection(valid.clone())


@dataclass
class TopEntropy(TokenMask):
    normalize: ClassVar[str] = "selected"
    rho: float = 0.2

    def __post_init__(self):
        _check_rho(self.rho)

    def select(self, *, valid, entropy, **_) -> TokenSelection:
        return TokenSelection(_rank_entropy(entropy, valid, self.rho, highest=True))


@dataclass
class BottomEntropy(TokenMask):
    normalize: ClassVar[str] = "selected"
    rho: float = 0.8

    def __post_init__(self):
        _check_rho(self.rho)

    def select(self, *, valid, entropy, **_) -> TokenSelection:
        return TokenSelection(_rank_entropy(entropy, valid, self.rho, highest=False))


def _rank_entropy(entropy, valid, rho, highest: bool) -> torch.Tensor:
    flat = torch.full(valid.shape, float("nan"), dtype=torch.float64)
    flat[valid] = entropy[valid].double() * (1 if highest else -1)
    picked = forking_tokens(flat.flatten().numpy(), rho)
    return torch.from_numpy(picked).reshape(valid.shape) & valid


@dataclass
class RandomTokens(TokenMask):
    normalize: ClassVar[str] = "selected"
    rho: float = 0.2

    def __post_init__(self):
        _check_rho(self.rho)

    def select(self, *, valid, generator=None, **_) -> TokenSelection:
        positions = torch.nonzero(valid.flatten()).flatten()
        k = _count(self.rho, len(positions))
        chosen = positions[torch.randperm(len(positions), generator=generator)[:k]]
        mask = torch.zeros(valid.numel(), dtype=torch.bool)
        mask[chosen] = True
        return TokenSelection(mask.reshape(valid.shape))


def covariance(log_prob: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor):
    """Per-token ``(A - mean A)(log π - mean log π)``, means over valid tokens."""
    a = advantages.detach().double()
    lp = log_prob.detach().double()
    return (a - a[valid].mean()) * (lp - lp[valid].mean())


@dataclass
class ClipCov(TokenMask):
    ratio: float = 2e-4
    low: float = 1.0
    high: float = 5.0

    def __post_init__(self):
        _check_ratio(self.ratio)
        if not self.low < self.high:
            raise UserError(f"Clip-Cov's band needs low < high, got ({self.low}, {self.high})")

    def select(self, *, valid, log_prob, advantages, clipped=None, generator=None, **_):
        cov = covariance(log_prob, advantages, valid)
        eligible = valid & (cov > self.low) & (cov < self.high)
        if clipped is not None:
            eligible &= ~clipped
        positions = torch.nonzero(eligible.flatten()).flatten()
        count = max(int(self.ratio * int(valid.sum())), 1)
        chosen = positions[torch.randperm(len(positions), generator=generator)[:count]]
        policy = valid.clone().flatten()
        policy[chosen] = False
        return TokenSelection(policy.reshape(valid.shape))


@dataclass
class KLCov(TokenMask):
    ratio: float = 2e-4
    kl_coef: float = 1.0

    def __post_init__(self):
        _check_ratio(self.ratio)
        if not (math.isfinite(self.kl_coef) and self.kl_coef >= 0):
            raise UserError(f"KL-Cov's `kl_coef` must be ≥ 0, got {self.kl_coef}")

    def select(self, *, valid, log_prob, advantages, **_):
        cov = covariance(log_prob, advantages, valid).flatten()
        positions = torch.nonzero(valid.flatten()).flatten()
        if len(positions) == 0:  # nothing to penalise (the reference's `if k != 0`)
            return TokenSelection(valid.clone(), torch.zeros_like(valid))
        count = max(1, int(len(positions) * self.ratio))
        top = positions[cov[positions].topk(count).indices]
        penalty = torch.zeros(valid.numel(), dtype=torch.bool)
        penalty[top] = True
        return TokenSelection(valid.clone(), penalty.reshape(valid.shape))
