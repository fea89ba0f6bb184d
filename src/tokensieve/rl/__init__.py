"""Forking-token RLVR: which response tokens carry the policy gradient, and the loss."""

from tokensieve.rl.policy_loss import masked_policy_loss
from tokensieve.rl.token_masks import (
    MASKS,
    AllTokens,
    BottomEntropy,
    ClipCov,
    KLCov,
    RandomTokens,
    TokenMask,
    TokenSelection,
    TopEntropy,
)

__all__ = [
    "MASKS",
    "AllTokens",
    "BottomEntropy",
    "ClipCov",
    "KLCov",
    "RandomTokens",
    "TokenMask",
    "TokenSelection",
    "TopEntropy",
    "masked_policy_loss",
]
