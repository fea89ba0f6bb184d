"""GRPO (TRL) whose policy gradient runs only on the tokens a `TokenMask` selects.

TRL's `GRPOTrainer` computes per-token entropies in its loss and, when
``top_entropy_quantile < 1``, multiplies the per-token loss by
``get_high_entropy_mask(entropies, completion_mask, threshold)``. This subclass
routes that call to a tokensieve `TokenMask`, so generation, rewards, advantages,
clipping (``epsilon``/``epsilon_high`` for clip-higher), loss types and
accelerate/DeepSpeed scaling all stay TRL's. With one process the selection is exact
(``ceil(rho·n)`` tokens, ties by position); with several, entropy masks use the
global quantile over all processes' tokens as TRL does.
"""

from __future__ import annotations

import torch
from trl import GRPOConfig, GRPOTrainer

from tokensieve.errors import UserError
from tokensieve.rl.token_masks import (
    AllTokens,
    BottomEntropy,
    RandomTokens,
    TokenMask,
    TopEntropy,
)


class ForkingTokenGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` plus ``token_mask`` (default: the paper's top-20% entropy tokens)."""

    def __init__(self, *args, token_mask: TokenMask | None = None, seed: int = 0, **kwargs):
        self.token_mask = token_mask or TopEntropy(0.2)
        if not isinstance(self.token_mask, AllTokens | TopEntropy | BottomEntropy | RandomTokens):
            raise UserError(
                f"{self.token_mask.name} changes the loss itself; the trainer supports the "
                "all, top-entropy, bottom-entropy and random masks"
            )
        config = kwargs.get("args")
        if not isinstance(config, GRPOConfig):
            raise UserError("pass a trl.GRPOConfig as args=")
        # Any value below 1 makes TRL ask get_high_entropy_mask for its token mask.
        config.top_entropy_quantile = 0.5
        self.mask_generator = torch.Generator().manual_seed(seed)
        super().__init__(*args, **kwargs)

    def get_high_entropy_mask(self, entropies, mask, threshold):
        valid = mask.bool()
        if self.accelerator.num_processes > 1 and isinstance(
            self.token_mask, TopEntropy | BottomEntropy
        ):
            selected = self._global_quantile_mask(entropies, valid)
        else:
            selected = self.token_mask.select(
                valid=valid.cpu(), entropy=entropies.detach().cpu(), generator=self.mask_generator
            ).policy.to(entropies.device)
        self._log_selection(entropies.detach(), valid, selected)
        return selected

    def _global_quantile_mask(self, entropies, valid):
        local = entropies[valid].float()
        padded = self.accelerator.pad_across_processes(local, dim=0, pad_index=-1e9)
        everything = self.accelerator.gather(padded)
        everything = everything[everything != -1e9]
        rho = self.token_mask.rho
        if isinstance(self.token_mask, TopEntropy):
            cut = torch.quantile(everything, 1 - rho)
            return (entropies >= cut) & valid
        cut = torch.quantile(everything, rho)
        return (entropies <= cut) & valid

    def _log_selection(self, entropies, valid, selected):
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        count = valid.sum().clamp_min(1)
        metrics["tokensieve/selected_fraction"].append(float(selected.sum() / count))
        unselected = valid & ~selected
        for name, part in (("selected", selected), ("unselected", unselected)):
            if part.any():
                metrics[f"tokensieve/entropy_{name}"].append(float(entropies[part].mean()))
