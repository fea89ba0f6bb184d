"""AWRS and masking on distributions small enough to know exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tokensieve.generate.token_samplers import AWRSSampler, MaskingSampler

V = 120


def setup(seed: int, peaked: float = 2.0, allowed_every: int = 7):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=V) * peaked
    logp = logits - np.logaddexp.reduce(logits)
    allowed_set = {v for v in range(V) if v % allowed_every == 3 % allowed_every}
    p = np.exp(logp)
    exact = np.array([p[v] if v in allowed_set else 0.0 for v in range(V)])
    return logp, allowed_set, exact


@pytest.mark.parametrize("sampler", [AWRSSampler(), MaskingSampler()])
def test_local_draw_matches_exact_constrained_distribution(sampler):
    logp, allowed_set, exact = setup(0)
    rng = np.random.default_rng(1)
    draws = 20000
    counts = np.zeros(V)
    for _ in range(draws):
        counts[sampler.sample(logp, allowed_set.__contains__, rng).token] += 1
    target = exact / exact.sum()
    tv = 0.5 * np.abs(counts / draws - target).sum()
    assert counts[[v for v in range(V) if v not in allowed_set]].sum() == 0
    assert tv < 0.02, tv
    # Goodness of fit: Pearson's chi-square well below its 0.999 quantile (df = 16).
    support = target > 0
    chi2 = (((counts - draws * target) ** 2)[support] / (draws * target[support])).sum()
    assert chi2 < 39.3, chi2


def weighted_draws(sampler, logp, allowed_set, seed, draws):
    """``[draws, V]`` values of ``w · 1{x = v}``, and the weights."""
    rng = np.random.default_rng(seed)
    values = np.zeros((draws, V))
    for i in range(draws):
        draw = sampler.sample(logp, allowed_set.__contains__, rng)
        if draw.token >= 0:
            values[i, draw.token] = np.exp(draw.log_weight)
    return values, values.sum(axis=1)


def assert_properly_weighted(values, weights, exact):
    """E[w] = Z and E[w · 1{x = v}] = p(v) c(v) for every token v, each within 4.5 of its
    own standard error (the weight's overall spread would dwarf most tokens' mass).
    Tokens drawn less than 1% of the time are checked as one group: with few hits a
    token's sample spread is too skewed for a normal bound."""
    draws = len(weights)
    z_error = weights.std() / np.sqrt(draws)
    assert abs(weights.mean() - exact.sum()) < 4.5 * z_error, (weights.mean(), exact.sum())
    allowed = exact > 0
    assert (values[:, ~allowed] == 0).all()
    common = exact / exact.sum() >= 0.01
    groups = [values[:, v] for v in np.flatnonzero(common)]
    groups.append(values[:, allowed & ~common].sum(axis=1))
    targets = [*exact[common], exact[allowed & ~common].sum()]
    for column, target in zip(groups, targets, strict=True):
        error = column.std() / np.sqrt(draws)
        assert error < 0.25 * target, "too few draws to tell"
        assert abs(column.mean() - target) < 4.5 * error, (column.mean(), target, error)


@pytest.mark.parametrize("estimator", ["recursive", "paper", "geometric"])
def test_awrs_weights_are_properly_weighted_and_unbiased(estimator):
    logp, allowed_set, exact = setup(2, peaked=1.0, allowed_every=3)
    values, weights = weighted_draws(AWRSSampler(estimator=estimator), logp, allowed_set,
                                     seed=3, draws=30000)  # fmt: skip
    assert_properly_weighted(values, weights, exact)


def test_the_per_token_check_catches_a_biased_weight():
    """A weight off by 20% fails the per-token check (so the check can fail)."""
    logp, allowed_set, exact = setup(2, peaked=1.0, allowed_every=3)
    values, weights = weighted_draws(AWRSSampler(), logp, allowed_set, seed=3, draws=30000)
    with pytest.raises(AssertionError):
        assert_properly_weighted(values * 1.2, weights * 1.2, exact)


def test_paper_estimator_draws_exactly_and_spends_its_own_checks():
    logp, allowed_set, exact = setup(0)
    rng = np.random.default_rng(1)
    sampler = AWRSSampler(estimator="paper")
    counts, checks = np.zeros(V), []
    for _ in range(20000):
        draw = sampler.sample(logp, allowed_set.__contains__, rng)
        counts[draw.token] += 1
        checks.append(draw.checks)
    assert 0.5 * np.abs(counts / 20000 - exact / exact.sum()).sum() < 0.02
    assert 2 <= np.mean(checks) < V
    with pytest.raises(ValueError, match="unknown AWRS estimator"):
        AWRSSampler(estimator="magic")
    with pytest.raises(ValueError, match="two loops"):
        AWRSSampler(estimator="paper", accepts=3)


def test_masking_weight_is_exactly_the_allowed_mass():
    logp, allowed_set, exact = setup(4)
    draw = MaskingSampler().sample(logp, allowed_set.__contains__, np.random.default_rng(0))
    assert draw.log_weight == pytest.approx(np.log(exact.sum()), rel=1e-12)
    assert draw.checks == V


def test_awrs_needs_few_checks_when_the_model_agrees_with_the_constraint():
    logp, allowed_set, _ = setup(5, peaked=4.0, allowed_every=2)
    rng = np.random.default_rng(0)
    checks = [AWRSSampler().sample(logp, allowed_set.__contains__, rng).checks for _ in range(500)]
    assert np.mean(checks) < 4 < V


@pytest.mark.parametrize(
    "sampler",
    [AWRSSampler(), AWRSSampler(estimator="paper"), AWRSSampler(estimator="geometric"),
     MaskingSampler()],
    ids=["recursive", "paper", "geometric", "masking"],
)  # fmt: skip
def test_nothing_allowed_kills_the_draw(sampler):
    """Every estimator's dead end: no token passes, so every token was checked once and
    the particle's weight is 0."""
    logp, _, _ = setup(6)
    draw = sampler.sample(logp, lambda v: False, np.random.default_rng(0))
    assert draw.token == -1 and draw.log_weight == float("-inf")
    assert draw.checks == V


def test_impossible_tokens_are_never_checked_and_weight_counts_full_mass():
    logp, allowed_set, exact = setup(7)
    masked = logp.copy()
    masked[:10] = -np.inf  # e.g. forbidden special tokens
    seen = []

    def allowed(v):
        seen.append(v)
        return v in allowed_set

    draw = MaskingSampler().sample(masked, allowed, np.random.default_rng(0))
    assert min(seen) >= 10
    assert draw.log_weight == pytest.approx(np.log(exact[10:].sum()), rel=1e-12)


@pytest.mark.parametrize("accepts", [3, 6])
def test_geometric_awrs_is_exact_and_properly_weighted(accepts):
    logp, allowed_set, exact = setup(8, peaked=1.0, allowed_every=3)
    sampler = AWRSSampler(accepts=accepts)
    values, weights = weighted_draws(sampler, logp, allowed_set, seed=9, draws=20000)
    counts = (values > 0).sum(axis=0)
    target = exact / exact.sum()
    assert 0.5 * np.abs(counts / 20000 - target).sum() < 0.03
    assert_properly_weighted(values, weights, exact)
