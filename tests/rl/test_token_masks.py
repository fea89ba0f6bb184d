"""Token masks on a hand-built batch; the masked loss and where its gradient flows."""

from __future__ import annotations

import math

import pytest
import torch

from tokensieve import UserError
from tokensieve.rl import (
    AllTokens,
    BottomEntropy,
    ClipCov,
    KLCov,
    RandomTokens,
    TokenSelection,
    TopEntropy,
    masked_policy_loss,
)

# Two responses, 6 positions; row 0 has 2 prompt/padding positions, row 1 has 1.
VALID = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
ENTROPY = torch.tensor(
    [[9.0, 0.5, 3.0, 0.1, 2.0, 9.0], [1.0, 3.0, 0.2, 2.0, 0.0, 9.0]]
)  # 9.0 only on invalid positions: they must never be picked


def positions(mask):
    return [tuple(p) for p in torch.nonzero(mask).tolist()]


def test_all_is_exactly_the_valid_tokens():
    assert torch.equal(AllTokens().select(valid=VALID).policy, VALID)


def test_top_entropy_picks_ceil_rho_n_highest_valid_tokens_with_ties_by_position():
    picked = TopEntropy(0.2).select(valid=VALID, entropy=ENTROPY).policy
    assert positions(picked) == [(0, 2), (1, 1)]  # two 3.0s: ceil(0.2 * 9) = 2
    picked = TopEntropy(0.4).select(valid=VALID, entropy=ENTROPY).policy
    assert positions(picked) == [(0, 2), (0, 4), (1, 1), (1, 3)]  # 2.0 tie: both fit


def test_bottom_entropy_is_the_low_end_and_complements_top():
    bottom = BottomEntropy(0.8).select(valid=VALID, entropy=ENTROPY).policy
    top = TopEntropy(0.2).select(valid=VALID, entropy=ENTROPY).policy
    assert int(bottom.sum()) == math.ceil(0.8 * 9 - 1e-9) == 8
    # 2 + 8 > 9 valid tokens: together they cover everything, overlapping in one token
    assert int((bottom | top).sum()) == 9 and int((bottom & top).sum()) == 1
    assert not (bottom & ~VALID).any()
    assert positions(BottomEntropy(1 / 9).select(valid=VALID, entropy=ENTROPY).policy) == [(1, 4)]


def test_random_picks_the_same_count_reproducibly():
    a = RandomTokens(0.3).select(valid=VALID, generator=torch.Generator().manual_seed(1)).policy
    b = RandomTokens(0.3).select(valid=VALID, generator=torch.Generator().manual_seed(1)).policy
    assert torch.equal(a, b) and int(a.sum()) == 3 and not (a & ~VALID).any()


@pytest.mark.parametrize("mask", [TopEntropy, BottomEntropy, RandomTokens])
@pytest.mark.parametrize("rho", [0, -0.5, 1.5])
def test_rho_outside_unit_interval(mask, rho):
    with pytest.raises(UserError, match="rho"):
        mask(rho)


def batch_for_covariance():
    log_prob = torch.tensor(
        [[0.0, -1.0, -0.5, -3.0, -0.2, 0.0], [-2.0, -0.1, -1.5, -0.3, -4.0, 0.0]]
    )
    advantages = torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0, 0.0], [-1.0, -1.0, -1.0, -1.0, -1.0, 0.0]])
    return log_prob, advantages


def reference_covariance(log_prob, advantages):
    cells = positions(VALID)
    mean_a = sum(float(advantages[c]) for c in cells) / len(cells)
    mean_lp = sum(float(log_prob[c]) for c in cells) / len(cells)
    return {c: (float(advantages[c]) - mean_a) * (float(log_prob[c]) - mean_lp) for c in cells}


def test_kl_cov_penalises_the_highest_covariance_tokens():
    log_prob, advantages = batch_for_covariance()
    cov = reference_covariance(log_prob, advantages)
    selection = KLCov(ratio=0.25).select(valid=VALID, log_prob=log_prob, advantages=advantages)
    expected = sorted(sorted(cov, key=lambda c: -cov[c])[: int(9 * 0.25)])
    assert positions(selection.penalty) == expected
    assert torch.equal(selection.policy, VALID)


def test_clip_cov_drops_tokens_with_covariance_in_range_only():
    log_prob, advantages = batch_for_covariance()
    cov = reference_covariance(log_prob, advantages)
    in_range = {c for c, v in cov.items() if 0.5 < v < 5.0}
    assert in_range
    selection = ClipCov(ratio=0.5, low=0.5, high=5.0).select(
        valid=VALID,
        log_prob=log_prob,
        advantages=advantages,
        generator=torch.Generator().manual_seed(0),
    )
    dropped = set(positions(VALID & ~selection.policy))
    assert dropped <= in_range and len(dropped) == min(len(in_range), int(0.5 * 9))
    clipped = torch.zeros_like(VALID)
    for cell in in_range:
        clipped[cell] = True  # already clipped by PPO: never chosen
    selection = ClipCov(ratio=0.5, low=0.5, high=5.0).select(
        valid=VALID, log_prob=log_prob, advantages=advantages, clipped=clipped
    )
    assert torch.equal(selection.policy, VALID)


def test_cov_masks_act_on_at_least_one_token():
    """The reference's ``max(int(ratio·N), 1)``: a ratio far below 1/N still drops (Clip-Cov)
    or penalises (KL-Cov) one token, the highest-covariance one for KL-Cov; the defaults
    on a mini-batch of a few hundred tokens are this case."""
    log_prob, advantages = batch_for_covariance()
    cov = reference_covariance(log_prob, advantages)
    kl_cov = KLCov(ratio=1e-6)
    penalty = kl_cov.select(valid=VALID, log_prob=log_prob, advantages=advantages).penalty
    assert positions(penalty) == [max(cov, key=cov.get)]
    in_band = {c for c, v in cov.items() if 0.5 < v < 5.0}
    for seed in range(5):
        kept = ClipCov(ratio=1e-6, low=0.5, high=5.0).select(
            valid=VALID, log_prob=log_prob, advantages=advantages,
            generator=torch.Generator().manual_seed(seed),
        ).policy  # fmt: skip
        dropped = set(positions(VALID & ~kept))
        assert len(dropped) == 1 and dropped <= in_band


def test_cov_masks_check_their_parameters_and_empty_batches():
    for bad in (dict(ratio=0.0), dict(ratio=1.5), dict(low=5.0, high=1.0)):
        with pytest.raises(UserError):
            ClipCov(**bad)
    for bad in (dict(ratio=0.0), dict(kl_coef=-1.0), dict(kl_coef=float("nan"))):
        with pytest.raises(UserError):
            KLCov(**bad)
    nothing = torch.zeros_like(VALID)  # e.g. every response token masked by a tool mask
    log_prob, advantages = batch_for_covariance()
    selection = KLCov().select(valid=nothing, log_prob=log_prob, advantages=advantages)
    assert not selection.policy.any() and not selection.penalty.any()
    kept = ClipCov().select(valid=nothing, log_prob=log_prob, advantages=advantages).policy
    assert not kept.any()


def test_selected_normalisation_counts_policy_and_penalty_tokens():
    """With ``normalize="selected"`` the denominator is the tokens that carry a term: the
    policy tokens and the penalty tokens, each counted once."""
    log_prob = torch.full((2, 6), -1.0)
    old = log_prob - 0.5  # r = e^0.5, |log r| = 0.5
    policy = torch.zeros_like(VALID)
    policy[0, 1] = policy[1, 2] = True
    penalty = torch.zeros_like(VALID)
    penalty[1, 2] = penalty[1, 4] = True  # one shared with the policy, one not
    penalty[0, 5] = True  # invalid: never counted
    adv = torch.ones(2, 6)
    loss = masked_policy_loss(log_prob, old, adv, VALID, TokenSelection(policy, penalty),
                              clip=False, kl_coef=2.0, normalize="selected")  # fmt: skip
    r = math.exp(0.5)
    total = 2 * (-1.0 * r) + 2 * (2.0 * 0.5)  # two policy terms, two valid penalty terms
    assert float(loss) == pytest.approx(total / 3)  # (0,1), (1,2), (1,4)


def test_masked_loss_equals_manual_computation():
    torch.manual_seed(0)
    log_prob = torch.randn(2, 6) * 0.1 - 1
    old = log_prob + torch.randn(2, 6) * 0.3
    adv = torch.randn(2, 6)
    selection = TopEntropy(0.4).select(valid=VALID, entropy=ENTROPY)
    for normalize in ("selected", "all"):
        total, count = 0.0, 0
        for cell in positions(VALID):
            r = math.exp(float(log_prob[cell] - old[cell]))
            a = float(adv[cell])
            term = max(-a * r, -a * min(max(r, 0.8), 1.28))
            if selection.policy[cell]:
                total += term
            count += 1 if normalize == "all" or selection.policy[cell] else 0
        loss = masked_policy_loss(
            log_prob,
            old,
            adv,
            VALID,
            selection,
            clip_low=0.2,
            clip_high=0.28,
            normalize=normalize,
        )
        assert float(loss) == pytest.approx(total / count, rel=1e-6)


def test_kl_cov_penalty_term():
    log_prob = torch.full((2, 6), -1.0)
    old = log_prob - 0.5
    selection = TokenSelection(VALID.clone(), torch.zeros_like(VALID))
    selection.penalty[0, 2] = True
    zero_adv = torch.zeros(2, 6)
    loss = masked_policy_loss(log_prob, old, zero_adv, VALID, selection, kl_coef=2.0)
    assert float(loss) == pytest.approx(2.0 * 0.5 / 9)


def test_gradient_flows_only_through_selected_tokens():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 11, requires_grad=True)
    tokens = torch.randint(0, 11, (2, 6))
    log_prob = torch.log_softmax(logits, -1).gather(2, tokens[..., None])[..., 0]
    selection = TopEntropy(0.2).select(valid=VALID, entropy=ENTROPY)
    loss = masked_policy_loss(log_prob, log_prob.detach(), torch.ones(2, 6), VALID, selection)
    loss.backward()
    has_grad = logits.grad.abs().sum(-1) > 0
    assert torch.equal(has_grad, selection.policy)
