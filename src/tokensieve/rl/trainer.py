"""GRPO (TRL) whose policy gradient runs only on the tokens a `TokenMask` selects.

TRL's `GRPOTrainer` computes per-token entropies in its loss and, when
``top_entropy_quantile < 1``, multiplies the per-token loss by
``get_high_entropy_mask(entropies, completion_mask, threshold)``. This subclass
routes that call to a tokensieve `TokenMask`, so generation, rewards, advantages,
clipping (``epsilon``/``epsilon_high`` for clip-higher), loss types and
accelerate/DeepSpeed scaling all stay TRL's. With one process the selection is exact
(``ceil(rho·n)`` tokens, ties by position); with several, entropy masks use the
global quantile over all processes' tokens as TRL does.

Clip-Cov and KL-Cov need each token's log-probability and advantage, which TRL's hook
does not pass: the subclass keeps the loss's inputs and log-probabilities for the
duration of one `_compute_loss` call. Clip-Cov's mask drops its tokens from the
gradient; KL-Cov keeps every token and adds ``kl_coef·|log π − log π_old|`` on its
tokens, normalised like TRL's token-level loss (over the batch's response tokens).

Normalisation: TRL divides the masked token loss by all response tokens (``"all"``,
as the paper's verl code does, so a 20% mask also shrinks the gradient);
``normalize="selected"`` rescales the mask so the loss is the mean over selected tokens.
"""

from __future__ import annotations

import copy

import torch
from trl import GRPOConfig, GRPOTrainer

from tokensieve.errors import UserError
from tokensieve.rl.policy_loss import ppo_clipped
from tokensieve.rl.token_masks import BottomEntropy, ClipCov, KLCov, TokenMask, TopEntropy


class ForkingTokenGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` plus ``token_mask`` (default: the paper's top-20% entropy tokens)."""

    def __init__(
        self,
        *args,
        token_mask: TokenMask | None = None,
        seed: int = 0,
        normalize: str = "all",
        **kwargs,
    ):
        self.token_mask = token_mask or TopEntropy(0.2)
        if normalize not in ("all", "selected"):
            raise UserError("normalize must be 'all' or 'selected'")
        self.normalize = normalize
        config = kwargs.get("args")
        if not isinstance(config, GRPOConfig):
            raise UserError("pass a trl.GRPOConfig as args=")
        # Any value below 1 makes TRL ask get_high_entropy_mask for its token mask; set on
        # a copy, so the caller's configuration is left as it was given.
        config = copy.copy(config)
        config.top_entropy_quantile = 0.5
        kwargs["args"] = config
        self.mask_generator = torch.Generator().manual_seed(seed)
        self._loss_inputs: dict | None = None
        self._loss_log_probs: torch.Tensor | None = None
        self._penalty: torch.Tensor | None = None
        super().__init__(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._loss_inputs is not None and kwargs.get("compute_entropy"):
            self._loss_log_probs = result[0]
        return result

    def _compute_loss(self, model, inputs):
        self._loss_inputs, self._penalty = inputs, None
        try:
            loss = super()._compute_loss(model, inputs)
            if self._penalty is not None and self._penalty.any():
                loss = loss + self._kl_penalty()
        finally:
            self._loss_inputs = self._loss_log_probs = self._penalty = None
        return loss

    def _kl_penalty(self) -> torch.Tensor:
        log_prob = self._loss_log_probs
        old = self._old_log_probs(log_prob)
        valid = self._loss_inputs["completion_mask"].bool()
        term = ((log_prob - old).abs() * self._penalty).sum() / valid.sum().clamp_min(1)
        if self.model.training:
            term = term / self.current_gradient_accumulation_steps
        return self.token_mask.kl_coef * term

    def _old_log_probs(self, log_prob: torch.Tensor) -> torch.Tensor:
        old = self._loss_inputs.get("old_per_token_logps")
        return log_prob.detach() if old is None else old

    def get_high_entropy_mask(self, entropies, mask, threshold):
        valid = mask.bool()
        if isinstance(self.token_mask, ClipCov | KLCov):
            selected = self._covariance_mask(valid)
        elif self.accelerator.num_processes > 1 and isinstance(
            self.token_mask, TopEntropy | BottomEntropy
        ):
            selected = self._global_quantile_mask(entropies, valid)
        else:
            selected = self.token_mask.select(
                valid=valid.cpu(), entropy=entropies.detach().cpu(), generator=self.mask_generator
            ).policy.to(entropies.device)
        self._log_selection(entropies.detach(), valid, selected)
        if self.normalize == "selected":
            return selected.float() * (valid.sum() / selected.sum().clamp_min(1))
        return selected

    def _covariance_mask(self, valid: torch.Tensor) -> torch.Tensor:
        log_prob = self._loss_log_probs.detach()
        advantages = self._loss_inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages[:, None]
        advantages = advantages.expand_as(log_prob)
        clipped = ppo_clipped(
            log_prob, self._old_log_probs(log_prob), advantages, self.epsilon_low,
            self.epsilon_high,
        )  # fmt: skip
        selection = self.token_mask.select(
            valid=valid.cpu(), log_prob=log_prob.cpu(), advantages=advantages.cpu(),
            clipped=clipped.cpu(), generator=self.mask_generator,
        )  # fmt: skip
        if selection.penalty is not None:
            self._penalty = selection.penalty.to(valid.device)
        return selection.policy.to(valid.device)

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
        if self._penalty is not None:
            metrics["tokensieve/penalised_fraction"].append(float(self._penalty.sum() / count))
