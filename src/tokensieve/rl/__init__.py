"""Forking-token RLVR: which response tokens carry the policy gradient, and the loss."""

from tokensieve.lazy import lazy_exports
from tokensieve.registry import Registry

MASKS = Registry(
    "token mask",
    {
        "all": "tokensieve.rl.token_masks:AllTokens",
        "top-entropy": "tokensieve.rl.token_masks:TopEntropy",
        "bottom-entropy": "tokensieve.rl.token_masks:BottomEntropy",
        "random": "tokensieve.rl.token_masks:RandomTokens",
        "clip-cov": "tokensieve.rl.token_masks:ClipCov",
        "kl-cov": "tokensieve.rl.token_masks:KLCov",
    },
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.rl.policy_loss": ["masked_policy_loss"],
        "tokensieve.rl.token_masks": [
            "AllTokens", "BottomEntropy", "ClipCov", "KLCov", "RandomTokens", "TokenMask",
            "TokenSelection", "TopEntropy",
        ],
    },
)  # fmt: skip
