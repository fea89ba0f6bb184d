"""One GRPO step through TRL with a tiny model: the token mask TRL applies is ours."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
import trl

from tokensieve import UserError
from tokensieve.rl import KLCov, TopEntropy
from tokensieve.rl.trainer import ForkingTokenGRPOTrainer


def config(tmp_path, **overrides):
    options = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-2,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        seed=0,
    )
    options.update(overrides)
    return trl.GRPOConfig(**options)


def length_reward(completions, **_):
    return [float(len(text)) for text in completions]


def test_one_step_applies_the_top_entropy_mask(tiny, tmp_path):
    model, tokenizer = tiny
    model = type(model)(model.config)  # a fresh copy: training changes weights
    model.load_state_dict(tiny[0].state_dict())
    data = datasets.Dataset.from_dict({"prompt": ["Count:", "Letters:", "Go:", "Say:"]})
    trainer = ForkingTokenGRPOTrainer(
        model=model,
        reward_funcs=length_reward,
        args=config(tmp_path),
        train_dataset=data,
        processing_class=tokenizer,
        token_mask=TopEntropy(0.2),
    )
    seen = []
    original = trainer.get_high_entropy_mask

    def spy(entropies, mask, threshold):
        selected = original(entropies, mask, threshold)
        seen.append((entropies.detach(), mask.bool(), selected))
        return selected

    trainer.get_high_entropy_mask = spy
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert seen
    for entropies, valid, selected in seen:
        n = int(valid.sum())
        assert int(selected.sum()) == math.ceil(0.2 * n - 1e-9)
        assert not (selected & ~valid).any()
        cut = entropies[selected].min()
        assert (entropies[valid & ~selected] <= cut).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    logged = trainer.state.log_history[0]
    assert 0 < logged["tokensieve/selected_fraction"] <= 0.5


def test_loss_changing_masks_are_refused(tiny, tmp_path):
    model, tokenizer = tiny
    data = datasets.Dataset.from_dict({"prompt": ["a"] * 4})
    with pytest.raises(UserError, match="changes the loss"):
        ForkingTokenGRPOTrainer(
            model=model,
            reward_funcs=length_reward,
            args=config(tmp_path),
            train_dataset=data,
            processing_class=tokenizer,
            token_mask=KLCov(),
        )
