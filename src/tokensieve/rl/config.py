"""One RL run's configuration, declared once: the fields, their defaults and their help.

`tokensieve rl train`'s options are generated from these fields
(`tokensieve.commandline.add_dataclass_options`), run.json stores them, and `validate`
checks them in the library's words before anything loads. Light (no torch).

Where the defaults come from. The 80/20 recipe is the authors'
``recipe/rlvr_with_high_entropy_tokens_only/run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh``
(Beyond-the-80-20-Rule-RLVR): rollouts at temperature 1 and top-p 1, clip 0.2 / 0.28,
token-mean loss, 512 prompts in mini-batches of 32 (16 updates per rollout; we default to
2, a choice for a 2-core machine, not a scaling of theirs). It validates at top-p 0.7;
`rl eval` and test accuracy sample at top-p 1 (rollouts' setting), which neither paper
uses for evaluation (the Entropy-Mechanism recipes evaluate greedily). Clip-Cov and
KL-Cov follow PRIME-RL's Entropy-Mechanism-of-RL recipes
(``recipe/dapo/7b_clip_cov.sh``, ``32b_clip_cov.sh``, ``7b_kl_cov.sh``, ``32b_kl_cov.sh``).
One deviation: we refuse KL-Cov on a strictly on-policy run, where |log π/π_old| and so
its penalty is 0, although the 7B KL-Cov recipe is one (its mini-batch equals its
rollout); the penalty would do nothing there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tokensieve.errors import UserError, check_sampling, check_seed
from tokensieve.rl import MASKS
from tokensieve.rl.tasks import TASKS, get_task


def _option(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


NORMALIZE = ("auto", "selected", "all")
DEFAULT_MINI_BATCHES = 2  # optimiser steps per rollout unless rollout_prompts says otherwise


@dataclass(frozen=True)
class RunConfig:
    task: str = field(metadata={"help": "the verifiable task", "choices": TASKS})
    mask: str = _option("top-entropy", "which response tokens carry the policy gradient",
                        choices=MASKS)  # fmt: skip
    rho: float = _option(0.2, "share of tokens selected (top-, bottom-entropy, random)")
    steps: int = _option(200, "optimiser steps")
    model: str | None = _option(None, "local HF model directory or .gguf (default: embedded)")
    seed: int = _option(0, "seed of sampling, masks and evaluation")
    group_size: int = _option(4, "completions per prompt (GRPO's group)")
    prompts_per_step: int = _option(2, "prompts per optimiser step (the mini-batch)")
    rollout_prompts: int | None = _option(
        None, "prompts generated per rollout, split into mini-batches of prompts-per-step "
        "(default: 2 mini-batches, our choice for this machine: the 80/20 recipe makes 16 "
        "updates per rollout, 512 prompts in mini-batches of 32; equal to "
        "prompts-per-step: strictly on-policy)",
    )  # fmt: skip
    num_iterations: int = _option(1, "passes over each rollout (GRPO's μ; > 1: off-policy)")
    max_new_tokens: int = _option(96, "longest completion in tokens")
    learning_rate: float = _option(1e-6, "AdamW learning rate")
    temperature: float = _option(
        1.0,
        "rollout temperature (1: the 80/20 recipe's; the masks' entropies are at "
        "this temperature, the sampled policy's)",
    )
    top_p: float = _option(
        1.0,
        "nucleus sampling of rollouts (1: off, the 80/20 recipe's: samples "
        "come from the policy whose entropies and gradients are used)",
    )
    epsilon: float = _option(
        0.2, "PPO's lower clip: the ratio is clipped at 1 - epsilon (the Clip-Cov "
        "recipes set 1 here and in --epsilon-high: the clip loosened to [0, 2])",
    )  # fmt: skip
    epsilon_high: float = _option(0.28, "clip-higher, DAPO (0.2: symmetric clipping)")
    save_every: int = _option(10, "checkpoint every N steps")
    eval_every: int = _option(0, "test accuracy every N steps, at 0 and at the end (0: never)")
    eval_problems: int = _option(64, "test problems per evaluation")
    normalize: str = _option(
        "auto", "the token-level loss's denominator: selected tokens, all response tokens, "
        "or auto: selected for the entropy and random masks (the 80/20 authors' code "
        "averages over them), all for all, clip-cov and kl-cov (verl's token-mean, as "
        "their reference)", choices=NORMALIZE,
    )  # fmt: skip
    cov_ratio: float = _option(
        2e-4, "share of tokens Clip-Cov / KL-Cov act on (at least one per mini-batch; "
        "2e-4 is Clip-Cov's in its recipes and KL-Cov's at 32B, 2e-3 KL-Cov's at 7B)",
    )  # fmt: skip
    implementation: str = _option(
        "tokensieve", "tokensieve's trainer, or TRL's own GRPOTrainer: the all-token anchor "
        "(mask all) or TRL's top_entropy_quantile flag (mask top-entropy, quantile rho)",
        choices=("tokensieve", "trl"),
    )  # fmt: skip

    def validate(self) -> None:
        get_task(self.task)
        MASKS.load(self.mask)
        for name in ("rho", "cov_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise UserError(f"`{name}` must be in (0, 1], got {getattr(self, name)}")
        if self.normalize not in NORMALIZE:
            raise UserError(f"`normalize` must be one of {', '.join(NORMALIZE)}")
        check_seed(self.seed)
        for name in ("steps", "group_size", "prompts_per_step", "max_new_tokens", "save_every",
                     "eval_problems"):  # fmt: skip
            if getattr(self, name) < 1:
                raise UserError(f"`{name}` must be at least 1")
        if self.implementation not in ("tokensieve", "trl"):
            raise UserError("`implementation` must be 'tokensieve' or 'trl'")
        if self.implementation == "trl" and self.mask not in ("all", "top-entropy"):
            raise UserError(
                "TRL's own trainer has all tokens or its top_entropy_quantile flag: use it "
                "with `mask` all or top-entropy"
            )
        if self.implementation == "trl" and self.normalize == "selected":
            raise UserError(
                "TRL's own trainer divides the loss by all response tokens: `normalize` "
                "selected needs tokensieve's trainer"
            )
        if self.eval_every < 0:
            raise UserError("`eval_every` must be 0 (never) or more")
        check_sampling(self.temperature, self.top_p)
        if self.temperature <= 0:
            raise UserError("`temperature` must be positive (GRPO samples)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise UserError(f"`learning_rate` must be a positive number, got {self.learning_rate}")
        if not (math.isfinite(self.epsilon_high) and self.epsilon_high >= 0):
            raise UserError(f"`epsilon_high` must be a number ≥ 0, got {self.epsilon_high}")
        if not (math.isfinite(self.epsilon) and 0 <= self.epsilon <= 1):
            raise UserError(f"`epsilon` must be in [0, 1], got {self.epsilon}")
        if self.num_iterations < 1:
            raise UserError(f"`num_iterations` must be at least 1, got {self.num_iterations}")
        rollout = self.rollout_size
        if rollout < 1 or rollout % self.prompts_per_step:
            raise UserError(
                f"`rollout_prompts` ({rollout}) must be a multiple of `prompts_per_step` "
                f"({self.prompts_per_step}): a rollout is split into whole mini-batches"
            )
        if self.mask == "kl-cov" and self.on_policy:
            raise UserError(
                "KL-Cov penalises |log π/π_old|, which is 0 in a strictly on-policy run: "
                "give `num_iterations` > 1 or `rollout_prompts` > `prompts_per_step`"
            )
        if self.save_every % self.steps_per_generation:
            raise UserError(
                f"`save_every` ({self.save_every}) must be a multiple of the mini-batches per "
                f"rollout ({self.steps_per_generation}), so checkpoints fall on rollout "
                "boundaries: a checkpoint inside a rollout would resume with new samples"
            )
        if self.group_size < 2:
            raise UserError("`group_size` must be at least 2 (GRPO compares completions)")

    @property
    def steps_per_generation(self) -> int:
        """Optimiser steps (mini-batches) per rollout."""
        return self.rollout_size // self.prompts_per_step

    @property
    def rollout_size(self) -> int:
        """Prompts per rollout (`rollout_prompts`, by default `DEFAULT_MINI_BATCHES`
        mini-batches)."""
        if self.rollout_prompts is None:
            return DEFAULT_MINI_BATCHES * self.prompts_per_step
        return self.rollout_prompts

    @property
    def loss_normalization(self) -> str:
        """``normalize`` with ``auto`` resolved for this mask (TRL's own trainer: all)."""
        if self.implementation == "trl":
            return "all"
        if self.normalize != "auto":
            return self.normalize
        return MASKS[self.mask].normalize

    @property
    def on_policy(self) -> bool:
        """Every update uses samples of the current policy (old log-probs = current)."""
        return self.num_iterations == 1 and self.steps_per_generation == 1

    def token_mask(self):
        cls = MASKS[self.mask]
        if self.mask in ("clip-cov", "kl-cov"):
            return cls(ratio=self.cov_ratio)
        return cls() if self.mask == "all" else cls(rho=self.rho)
