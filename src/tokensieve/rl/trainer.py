"""GRPO (TRL) whose policy gradient runs only on the tokens a `TokenMask` selects.

Generation, rewards, group advantages, several updates per rollout
(``num_iterations``, ``steps_per_generation``) and accelerate/DeepSpeed scaling stay
TRL's `GRPOTrainer`'s. The loss is ours: `_compute_loss` reads the batch TRL prepared
(per-token log-probabilities and entropies from TRL's forward, the old log-probabilities
of the rollout, the advantages), asks the `TokenMask` which tokens count
(`select_tokens`), and returns `tokensieve.rl.policy_loss.masked_policy_loss`, the
function the tests check, token by token, against the formulas as TRL and the
reference code compute them (TRL's ``dapo`` loss; the unclipped KL-Cov loss of
PRIME-RL's ``core_algos.py``). With one process entropy masks
are exact (``ceil(rho·n)`` tokens, ties by position); with several they use the global
quantile over all processes' tokens, as TRL does.

- PPO's clipped surrogate with ``epsilon``/``epsilon_high`` (clip-higher) for every
  mask but KL-Cov, whose reference loss is unclipped ``-A·r`` plus
  ``kl_coef·|log π − log π_old|`` on its top-covariance tokens (PRIME-RL's
  Entropy-Mechanism-of-RL, ``compute_policy_loss_kl_cov``). Clip-Cov drops its tokens
  from the clipped surrogate, choosing among tokens PPO has not already clipped.
- Normalisation: ``"all"`` divides by the response tokens exactly as TRL's default
  ``dapo`` loss does (so ``--mask all`` trains as TRL's own trainer, and
  ``TopEntropy(rho)`` as TRL's ``top_entropy_quantile=rho``; tests check both losses
  agree; that is the 80/20 paper's equation); ``"selected"`` averages over the selected
  tokens (the 80/20 authors' code); ``"auto"`` (the default) is
  the mask's own method's (``TokenMask.normalize``: selected for the entropy and random
  masks, all for the others).
- Not supported (refused): a reference-model KL (``beta > 0``), loss types other than
  ``dapo``, sequence-level importance sampling, vLLM, and the options of TRL's own loss
  this one does not read (``top_entropy_quantile``: use ``TopEntropy``; ``delta``;
  ``off_policy_mask_threshold``; an entropy bonus).
"""

from __future__ import annotations

import torch
from trl import GRPOConfig, GRPOTrainer

from tokensieve.errors import UserError
from tokensieve.rl.policy_loss import masked_policy_loss, ppo_clipped
from tokensieve.rl.token_masks import (
    BottomEntropy,
    ClipCov,
    KLCov,
    TokenMask,
    TokenSelection,
    TopEntropy,
)


class ForkingTokenGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` plus ``token_mask`` (default: the paper's top-20% entropy tokens)."""

    def __init__(
        self,
        *args,
        token_mask: TokenMask | None = None,
        seed: int = 0,
        normalize: str = "auto",
        **kwargs,
    ):
        self.token_mask = token_mask or TopEntropy(0.2)
        if normalize not in ("auto", "all", "selected"):
            raise UserError("normalize must be 'auto', 'all' or 'selected'")
        self.normalize = self.token_mask.normalize if normalize == "auto" else normalize
        config = kwargs.get("args")
        if not isinstance(config, GRPOConfig):
            raise UserError("pass a trl.GRPOConfig as args=")
        unsupported = {
            "beta": config.beta != 0.0,
            "loss_type": config.loss_type != "dapo",
            "importance_sampling_level": config.importance_sampling_level != "token",
            "use_vllm": bool(config.use_vllm),
            # options TRL's own loss reads and ours does not: refused, never ignored
            "top_entropy_quantile (pass token_mask=TopEntropy(rho))":
                config.top_entropy_quantile < 1.0,
            "delta": config.delta is not None,
            "off_policy_mask_threshold": config.off_policy_mask_threshold is not None,
            "entropy_coef": config.entropy_coef != 0.0 or bool(config.use_adaptive_entropy),
        }  # fmt: skip
        if any(unsupported.values()):
            names = ", ".join(name for name, bad in unsupported.items() if bad)
            raise UserError(f"the forking-token trainer does not support {names} "
                            "(use TRL's GRPOTrainer for those)")  # fmt: skip
        self.mask_generator = torch.Generator().manual_seed(seed)
        super().__init__(*args, **kwargs)

    def _compute_loss(self, model, inputs):
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        log_prob, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
        )
        valid = mask.bool()
        advantages = inputs["advantages"]
        advantages = advantages[:, None] if advantages.dim() == 1 else advantages
        advantages = advantages.expand_as(log_prob)
        old = inputs.get("old_per_token_logps")
        old = log_prob.detach() if old is None else old
        selection = self.select_tokens(entropies.detach(), valid, log_prob.detach(), old,
                                       advantages)  # fmt: skip
        loss = masked_policy_loss(
            log_prob, old, advantages, valid, selection,
            clip_low=self.epsilon_low, clip_high=self.epsilon_high,
            clip=not isinstance(self.token_mask, KLCov), normalize=self.normalize,
            kl_coef=getattr(self.token_mask, "kl_coef", 1.0),
            denominator=self._token_denominator(inputs),
        )  # fmt: skip
        self._log_loss_metrics(entropies.detach(), valid, log_prob.detach() - old, advantages)
        return loss

    def _token_denominator(self, inputs) -> torch.Tensor:
        """TRL's ``dapo`` normaliser: the generation batch's response tokens per process,
        per optimiser step (rescaled for gradient accumulation in training)."""
        count = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if self.model.training:
            count = count * self.current_gradient_accumulation_steps
            count = count / self.args.steps_per_generation
        return count

    def select_tokens(self, entropies, valid, log_prob, old, advantages) -> TokenSelection:
        """The tokens whose policy-gradient term counts (and KL-Cov's penalty tokens)."""
        if isinstance(self.token_mask, ClipCov | KLCov):
            clipped = ppo_clipped(log_prob, old, advantages, self.epsilon_low, self.epsilon_high)
            selection = self.token_mask.select(
                valid=valid.cpu(), log_prob=log_prob.cpu(), advantages=advantages.cpu(),
                clipped=clipped.cpu(), generator=self.mask_generator,
            )  # fmt: skip
        elif self.accelerator.num_processes > 1 and isinstance(
            self.token_mask, TopEntropy | BottomEntropy
        ):
            selection = TokenSelection(self._global_quantile_mask(entropies, valid))
        else:
            selection = self.token_mask.select(
                valid=valid.cpu(), entropy=entropies.cpu(), generator=self.mask_generator
            )
        penalty = None if selection.penalty is None else selection.penalty.to(valid.device)
        selection = TokenSelection(selection.policy.to(valid.device), penalty)
        self._log_selection(entropies, valid, selection)
        return selection

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

    def _log_selection(self, entropies, valid, selection: TokenSelection):
        metrics = self._metrics["train" if self.model.training else "eval"]
        count = valid.sum().clamp_min(1)
        selected = selection.policy & valid
        metrics["tokensieve/selected_fraction"].append(float(selected.sum() / count))
        unselected = valid & ~selected
        for name, part in (("selected", selected), ("unselected", unselected)):
            if part.any():
                metrics[f"tokensieve/entropy_{name}"].append(float(entropies[part].mean()))
        if selection.penalty is not None:
            penalised = float((selection.penalty & valid).sum() / count)
            metrics["tokensieve/penalised_fraction"].append(penalised)

    def _log_loss_metrics(self, entropies, valid, log_ratio, advantages):
        """TRL's own loss metrics under TRL's names (entropy, clip ratios), so logs and
        plots read the same whichever trainer ran."""
        metrics = self._metrics["train" if self.model.training else "eval"]

        def mean(values):
            totals = torch.stack([(values * valid).sum(), valid.sum().float()])
            totals = self.accelerator.reduce(totals, reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        ratio = torch.exp(log_ratio)
        low = (ratio < 1 - self.epsilon_low) & (advantages < 0)
        high = (ratio > 1 + self.epsilon_high) & (advantages > 0)
        metrics["entropy"].append(mean(entropies.float()))
        metrics["clip_ratio/low_mean"].append(mean(low.float()))
        metrics["clip_ratio/high_mean"].append(mean(high.float()))
        metrics["clip_ratio/region_mean"].append(mean((low | high).float()))
