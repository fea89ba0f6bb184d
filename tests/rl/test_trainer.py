"""One GRPO step through TRL with a tiny model: the token mask TRL applies is ours."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
import trl

from tokensieve import UserError
from tokensieve.rl import ClipCov, KLCov, TopEntropy
from tokensieve.rl.token_masks import covariance
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


def make_trainer(tiny, tmp_path, token_mask, **kwargs):
    model, tokenizer = tiny
    fresh = type(model)(model.config)  # a fresh copy: training changes weights
    fresh.load_state_dict(model.state_dict())
    overrides = kwargs.pop("overrides", {})
    data = datasets.Dataset.from_dict({"prompt": ["Count:", "Letters:", "Go:", "Say:"]})
    return ForkingTokenGRPOTrainer(
        model=fresh,
        reward_funcs=length_reward,
        args=config(tmp_path, **overrides),
        train_dataset=data,
        processing_class=tokenizer,
        token_mask=token_mask,
        **kwargs,
    )


def test_clip_cov_drops_exactly_the_tokens_its_rule_picks(tiny, tmp_path):
    # a wide band and ratio so that tokens are dropped in one small batch
    mask = ClipCov(ratio=0.2, low=-1e9, high=1e9)
    trainer = make_trainer(tiny, tmp_path, mask, seed=3)
    seen = []
    original = trainer._covariance_mask

    def spy(valid):
        generator_state = trainer.mask_generator.get_state()
        log_prob = trainer._loss_log_probs.detach().clone()
        advantages = trainer._loss_inputs["advantages"].clone()
        selected = original(valid)
        seen.append((valid, log_prob, advantages, generator_state, selected))
        return selected

    trainer._covariance_mask = spy
    trainer.train()
    assert seen
    for valid, log_prob, advantages, state, selected in seen:
        generator = torch.Generator().manual_seed(0)
        generator.set_state(state)
        advantages = advantages[:, None].expand_as(log_prob)
        expected = mask.select(
            valid=valid, log_prob=log_prob, advantages=advantages,
            clipped=torch.zeros_like(valid), generator=generator,
        ).policy  # on-policy: ratio 1, nothing clipped  # fmt: skip
        assert torch.equal(selected, expected)
        dropped = int((valid & ~selected).sum())
        assert dropped == max(int(0.2 * int(valid.sum())), 1) or advantages.abs().max() == 0


def test_kl_cov_penalises_its_tokens_and_the_loss_grows_by_the_penalty(tiny, tmp_path):
    mask = KLCov(ratio=0.25, kl_coef=2.0)
    # two optimisation passes over each batch: the second one is off-policy, |log r| > 0
    overrides = {"num_iterations": 2, "max_steps": 2}
    trainer = make_trainer(tiny, tmp_path, mask, overrides=overrides)
    penalties = []
    original = trainer._kl_penalty

    def spy():
        value = original()
        log_prob = trainer._loss_log_probs.detach()
        old = trainer._old_log_probs(log_prob)
        valid = trainer._loss_inputs["completion_mask"].bool()
        penalty = trainer._penalty
        cov = covariance(log_prob, trainer._loss_inputs["advantages"][:, None].expand_as(log_prob),
                         valid)  # fmt: skip
        count = max(1, int(int(valid.sum()) * 0.25))
        assert int(penalty.sum()) == count and not (penalty & ~valid).any()
        assert cov[penalty].min() >= cov[valid & ~penalty].max()
        manual = 2.0 * ((log_prob - old).abs() * penalty).sum() / valid.sum()
        manual = manual / trainer.current_gradient_accumulation_steps
        assert torch.allclose(value.detach(), manual)
        penalties.append(float(value))
        return value

    trainer._kl_penalty = spy
    trainer.train()
    assert penalties and max(penalties) > 0
    assert trainer.state.log_history[0]["tokensieve/penalised_fraction"] > 0


def test_selected_normalisation_rescales_the_mask_to_a_mean_over_selected(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, TopEntropy(0.2), normalize="selected")
    masks = []
    original = trainer.get_high_entropy_mask

    def spy(entropies, mask, threshold):
        returned = original(entropies, mask, threshold)
        masks.append((mask.bool(), returned))
        return returned

    trainer.get_high_entropy_mask = spy
    trainer.train()
    for valid, returned in masks:
        chosen = returned > 0
        assert int(chosen.sum()) == math.ceil(0.2 * int(valid.sum()) - 1e-9)
        # TRL divides by all response tokens; the weights make it a mean over the chosen
        assert torch.allclose(returned.sum(), valid.sum().float())
    with pytest.raises(UserError, match="normalize"):
        make_trainer(tiny, tmp_path, TopEntropy(0.2), normalize="tokens")
