"""One GRPO step through TRL with a tiny model: the token mask TRL applies is ours."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
import trl

from tokensieve import UserError
from tokensieve.rl import AllTokens, BottomEntropy, ClipCov, KLCov, TopEntropy
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


def make_trainer(tiny, tmp_path, token_mask, cls=None, **kwargs):
    model, tokenizer = tiny
    fresh = type(model)(model.config)  # a fresh copy: training changes weights
    fresh.load_state_dict(model.state_dict())
    overrides = kwargs.pop("overrides", {})
    data = datasets.Dataset.from_dict({"prompt": ["Count:", "Letters:", "Go:", "Say:"]})
    common = dict(model=fresh, reward_funcs=length_reward, args=config(tmp_path, **overrides),
                  train_dataset=data, processing_class=tokenizer)  # fmt: skip
    if cls is not None:
        return cls(**common)
    return ForkingTokenGRPOTrainer(**common, token_mask=token_mask, **kwargs)


def record_losses(trainer):
    """Every `_compute_loss` call: its inputs, what TRL's forward gave, the selection and
    the loss returned (a spy, so the trainer runs unchanged)."""
    calls = []
    forward, select, compute = (trainer._get_per_token_logps_and_entropies,
                                trainer.select_tokens, trainer._compute_loss)  # fmt: skip

    def spy_forward(*args, **kwargs):
        result = forward(*args, **kwargs)
        if kwargs.get("compute_entropy") and calls and "log_prob" not in calls[-1]:
            calls[-1]["log_prob"], calls[-1]["entropy"] = result[0].detach(), result[1].detach()
        return result

    def spy_select(*args, **kwargs):
        calls[-1]["generator"] = trainer.mask_generator.get_state()
        calls[-1]["selection"] = select(*args, **kwargs)
        return calls[-1]["selection"]

    def spy_compute(model, inputs):
        calls.append({"inputs": inputs, "training": model.training})
        loss = compute(model, inputs)
        calls[-1]["loss"] = loss.detach()
        return loss

    trainer._get_per_token_logps_and_entropies = spy_forward
    trainer.select_tokens = spy_select
    trainer._compute_loss = spy_compute
    return calls


def reference_loss(call, trainer, *, clip=True, kl_coef=0.0, normalize="all"):
    """The token-level loss as the papers' reference code and TRL compute it (clipped
    surrogate; KL-Cov unclipped with its |log r| penalty), token by token in Python (no
    tensor algebra shared with `masked_policy_loss`), with TRL's dapo denominator."""
    inputs, log_prob = call["inputs"], call["log_prob"]
    valid = inputs["completion_mask"].bool()
    old = inputs.get("old_per_token_logps")
    old = log_prob if old is None else old
    advantages = inputs["advantages"]
    policy, penalty = call["selection"].policy, call["selection"].penalty
    low, high = trainer.epsilon_low, trainer.epsilon_high
    total, selected = 0.0, 0
    for b in range(valid.shape[0]):
        a = float(advantages[b])
        for t in range(valid.shape[1]):
            if not valid[b, t]:
                continue
            log_ratio = float(log_prob[b, t]) - float(old[b, t])
            ratio = math.exp(log_ratio)
            term = 0.0
            if policy[b, t]:
                term = -a * ratio
                if clip:
                    term = max(term, -a * min(max(ratio, 1 - low), 1 + high))
                selected += 1
            if penalty is not None and penalty[b, t]:
                term += kl_coef * abs(log_ratio)
            total += term
    count = float(inputs["num_items_in_batch"]) * trainer.current_gradient_accumulation_steps
    count /= trainer.args.steps_per_generation
    if normalize == "selected":
        count *= selected / int(valid.sum())
    return total / count


def assert_trains_with_trls_loss(trainer, plain):
    """Train `trainer` two steps; at each, TRL's own `_compute_loss` (of `plain`, on the
    same batch and weights) gives the loss ours returns."""
    pairs = []
    ours = trainer._compute_loss

    def both(model, inputs):
        plain.current_gradient_accumulation_steps = trainer.current_gradient_accumulation_steps
        plain.args.steps_per_generation = trainer.args.steps_per_generation
        with torch.no_grad():
            theirs = trl.GRPOTrainer._compute_loss(plain, model, inputs)
        loss = ours(model, inputs)
        pairs.append((loss.detach(), theirs))
        return loss

    trainer._compute_loss = both
    trainer.train()
    assert len(pairs) == 2
    for loss, theirs in pairs:
        torch.testing.assert_close(loss, theirs, rtol=1e-5, atol=1e-7)


def test_mask_all_trains_with_trls_own_loss(tiny, tmp_path):
    """`--mask all` is TRL's GRPO: on the same batch, at the same weights, TRL's own
    `_compute_loss` gives the same loss."""
    trainer = make_trainer(tiny, tmp_path, AllTokens(), overrides={"num_iterations": 2,
                                                                   "max_steps": 2})  # fmt: skip
    plain = make_trainer(tiny, tmp_path, None, cls=trl.GRPOTrainer)
    assert_trains_with_trls_loss(trainer, plain)


def test_one_step_trains_only_the_top_entropy_tokens(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, TopEntropy(0.2), normalize="selected")
    calls = record_losses(trainer)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert calls
    for call in calls:
        entropy, valid = call["entropy"], call["inputs"]["completion_mask"].bool()
        selected = call["selection"].policy
        n = int(valid.sum())
        assert int(selected.sum()) == math.ceil(0.2 * n - 1e-9)
        assert not (selected & ~valid).any()
        assert (entropy[valid & ~selected] <= entropy[selected].min()).all()
        expected = reference_loss(call, trainer, normalize="selected")
        assert float(call["loss"]) == pytest.approx(expected, rel=1e-5, abs=1e-8)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(),
                                                      strict=True))  # fmt: skip
    logged = trainer.state.log_history[0]
    assert 0 < logged["tokensieve/selected_fraction"] <= 0.5


def python_covariance(log_prob, advantages, valid) -> dict:
    """(A - mean A)(log π - mean log π) per valid cell, means over valid cells, in Python
    (independent of `tokensieve.rl.token_masks.covariance`)."""
    cells = [tuple(c) for c in valid.nonzero().tolist()]
    mean_a = sum(float(advantages[c]) for c in cells) / len(cells)
    mean_lp = sum(float(log_prob[c]) for c in cells) / len(cells)
    return {c: (float(advantages[c]) - mean_a) * (float(log_prob[c]) - mean_lp) for c in cells}


def test_clip_cov_drops_exactly_the_tokens_its_rule_picks(tiny, tmp_path):
    # a large ratio so that several tokens are dropped in one small batch; the band keeps
    # the positive covariances only (the rule's direction; the default band 1-5 is wider
    # than a tiny model's covariances)
    mask = ClipCov(ratio=0.2, low=0.0, high=1e9)
    trainer = make_trainer(tiny, tmp_path, mask, seed=3)
    calls = record_losses(trainer)
    trainer.train()
    assert calls
    dropped_seen = 0
    for call in calls:
        valid = call["inputs"]["completion_mask"].bool()
        log_prob = call["log_prob"]
        advantages = call["inputs"]["advantages"][:, None].expand_as(log_prob)
        generator = torch.Generator().manual_seed(0)
        generator.set_state(call["generator"])
        expected = mask.select(
            valid=valid, log_prob=log_prob, advantages=advantages,
            clipped=torch.zeros_like(valid), generator=generator,
        ).policy  # on-policy: ratio 1, nothing clipped  # fmt: skip
        assert torch.equal(call["selection"].policy, expected)  # reproducible from its seed
        cov = python_covariance(log_prob, advantages, valid)
        in_band = {c for c, v in cov.items() if 0.0 < v < 1e9}
        dropped = {tuple(c) for c in (valid & ~call["selection"].policy).nonzero().tolist()}
        assert dropped <= in_band
        assert len(dropped) == min(len(in_band), max(int(0.2 * len(cov)), 1))
        dropped_seen += len(dropped)
        assert float(call["loss"]) == pytest.approx(reference_loss(call, trainer), rel=1e-5,
                                                    abs=1e-8)  # fmt: skip
    assert dropped_seen, "no token dropped: the rule was not exercised"


def test_clip_cov_off_policy_skips_tokens_ppo_clipped_and_keeps_the_clip(tiny, tmp_path):
    """Off-policy (two passes over each batch, a tight clip): the tokens PPO clips are
    worked out here from the ratio, never offered to Clip-Cov, and the loss keeps the
    clipped surrogate on the rest (the reference's `compute_policy_loss_clip_cov`)."""
    mask = ClipCov(ratio=0.2, low=-1e9, high=1e9)
    trainer = make_trainer(tiny, tmp_path, mask, seed=3, overrides={
        "num_iterations": 2, "max_steps": 2, "epsilon": 0.01, "epsilon_high": 0.01})  # fmt: skip
    calls = record_losses(trainer)
    trainer.train()
    clipped_seen = 0
    for call in calls:
        valid = call["inputs"]["completion_mask"].bool()
        log_prob, old = call["log_prob"], call["inputs"].get("old_per_token_logps")
        old = log_prob if old is None else old
        advantages = call["inputs"]["advantages"][:, None].expand_as(log_prob)
        clipped = torch.zeros_like(valid)
        for b, t in valid.nonzero().tolist():
            ratio, a = math.exp(float(log_prob[b, t]) - float(old[b, t])), float(advantages[b, t])
            clipped[b, t] = (a > 0 and ratio > 1.01) or (a < 0 and ratio < 0.99)
        clipped_seen += int(clipped.sum())
        generator = torch.Generator().manual_seed(0)
        generator.set_state(call["generator"])
        expected = mask.select(valid=valid, log_prob=log_prob, advantages=advantages,
                               clipped=clipped, generator=generator).policy  # fmt: skip
        assert torch.equal(call["selection"].policy, expected)
        assert not (clipped & ~call["selection"].policy).any()  # a clipped token stays
        assert float(call["loss"]) == pytest.approx(reference_loss(call, trainer), rel=1e-5,
                                                    abs=1e-8)  # fmt: skip
    assert clipped_seen, "nothing was clipped: the rule was not exercised"


def test_top_entropy_with_all_tokens_normalised_is_trls_own_flag(tiny, tmp_path):
    """The anchor arm: TRL's `top_entropy_quantile=0.2` and `TopEntropy(0.2)` divided by
    all response tokens give the same loss on the same batch, on- and off-policy; the
    default (`auto`) divides by the selected tokens instead, as the 80/20 code.

    A group's completions share their first token's entropy, and at a tie TRL keeps
    every tied token where we keep exactly ceil(ρn); both trainers therefore see the
    same entropies with a tiny position-dependent offset, which only breaks ties."""
    trainer = make_trainer(tiny, tmp_path, TopEntropy(0.2), normalize="all",
                           overrides={"num_iterations": 2, "max_steps": 2})  # fmt: skip
    plain = make_trainer(tiny, tmp_path, None, cls=trl.GRPOTrainer,
                         overrides={"top_entropy_quantile": 0.2})  # fmt: skip
    for each in (trainer, plain):
        forward = each._get_per_token_logps_and_entropies

        def untied(*args, forward=forward, **kwargs):
            log_prob, entropies, *rest = forward(*args, **kwargs)
            if entropies is not None:
                offset = torch.arange(entropies.numel(), dtype=entropies.dtype)
                entropies = entropies + 1e-4 * offset.reshape(entropies.shape) / offset.numel()
            return (log_prob, entropies, *rest)

        each._get_per_token_logps_and_entropies = untied
    assert_trains_with_trls_loss(trainer, plain)
    assert make_trainer(tiny, tmp_path, TopEntropy(0.2)).normalize == "selected"
    assert make_trainer(tiny, tmp_path, KLCov()).normalize == "all"


def test_kl_cov_loss_is_the_references_unclipped_loss_plus_its_penalty(tiny, tmp_path):
    mask = KLCov(ratio=0.25, kl_coef=2.0)
    # two optimisation passes over each batch: the second one is off-policy, |log r| > 0
    trainer = make_trainer(tiny, tmp_path, mask, overrides={"num_iterations": 2, "max_steps": 2})
    calls = record_losses(trainer)
    trainer.train()
    off_policy = 0
    for call in calls:
        log_prob, valid = call["log_prob"], call["inputs"]["completion_mask"].bool()
        penalty = call["selection"].penalty
        advantages = call["inputs"]["advantages"][:, None].expand_as(log_prob)
        cov = python_covariance(log_prob, advantages, valid)
        count = max(1, int(len(cov) * 0.25))
        assert int(penalty.sum()) == count and not (penalty & ~valid).any()
        penalised = {tuple(c) for c in penalty.nonzero().tolist()}
        assert min(cov[c] for c in penalised) >= max(v for c, v in cov.items()
                                                     if c not in penalised)  # fmt: skip
        expected = reference_loss(call, trainer, clip=False, kl_coef=2.0)
        assert float(call["loss"]) == pytest.approx(expected, rel=1e-5, abs=1e-8)
        old = call["inputs"].get("old_per_token_logps")
        off_policy += old is not None and not torch.equal(old, log_prob)
    assert off_policy, "no off-policy pass: the penalty was never exercised"
    assert trainer.state.log_history[0]["tokensieve/penalised_fraction"] > 0


def test_unsupported_trl_options_and_normalisations_are_refused(tiny, tmp_path):
    with pytest.raises(UserError, match="normalize"):
        make_trainer(tiny, tmp_path, TopEntropy(0.2), normalize="tokens")
    with pytest.raises(UserError, match="beta"):
        make_trainer(tiny, tmp_path, TopEntropy(0.2), overrides={"beta": 0.1})
    for option, value, named in (
        ("top_entropy_quantile", 0.2, "top_entropy_quantile"), ("delta", 2.0, "delta"),
        ("off_policy_mask_threshold", 0.5, "off_policy_mask_threshold"),
        ("entropy_coef", 0.01, "entropy_coef"), ("use_adaptive_entropy", True, "entropy_coef"),
        ("loss_type", "grpo", "loss_type"), ("importance_sampling_level", "sequence",
                                             "importance_sampling_level"),
    ):  # fmt: skip
        with pytest.raises(UserError, match=named):
            make_trainer(tiny, tmp_path, TopEntropy(0.2), overrides={option: value})
    with pytest.raises(UserError, match="GRPOConfig"):
        ForkingTokenGRPOTrainer(model=tiny[0], reward_funcs=length_reward, args=None,
                                processing_class=tiny[1])  # fmt: skip


def test_trls_top_entropy_quantile_selects_what_top_entropy_selects(tiny, tmp_path):
    """The anchor for the paper's method: TRL's own flag. On 200 random batches (distinct
    entropies, so no ties) its mask equals `TopEntropy(rho)` exactly."""
    plain = make_trainer(tiny, tmp_path, None, cls=trl.GRPOTrainer)
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        rho = [0.1, 0.2, 0.5][trial % 3]
        entropies = torch.rand(4, 12, generator=generator) * 3
        lengths = torch.randint(1, 13, (4,), generator=generator)
        valid = torch.arange(12)[None, :] < lengths[:, None]
        theirs = plain.get_high_entropy_mask(entropies, valid.long(), 1 - rho).bool() & valid
        ours = TopEntropy(rho).select(valid=valid, entropy=entropies).policy
        assert torch.equal(theirs, ours), (trial, rho)


@pytest.mark.parametrize("mask", [TopEntropy(0.2), BottomEntropy(0.8)])
def test_global_quantile_mask_is_the_quantile_over_every_token(tiny, tmp_path, mask):
    """Several processes use one cut over every process's valid tokens, as TRL does
    (linear-interpolation quantile); with one process the gather is the identity, so the
    cut is checked here against the definition, for both entropy masks."""
    trainer = make_trainer(tiny, tmp_path, mask)
    entropy = torch.tensor([[0.3, 2.0, 1.1, 9.0], [0.7, 0.7, 5.0, 1.4]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    cells = [(b, t) for b in range(2) for t in range(4) if valid[b, t]]
    values = sorted(float(entropy[c]) for c in cells)
    top = isinstance(mask, TopEntropy)
    position = (1 - mask.rho if top else mask.rho) * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    cut = values[low] + (values[high] - values[low]) * (position - low)
    expected = torch.zeros_like(valid)
    for c in cells:
        expected[c] = float(entropy[c]) >= cut if top else float(entropy[c]) <= cut
    assert torch.equal(trainer._global_quantile_mask(entropy, valid), expected)
