"""SMC and whole-string distributions, against exhaustive enumeration on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokensieve.generate import (
    AWRSSampler,
    LLGuidanceConstraint,
    MaskingSampler,
    RegexConstraint,
    TokenLM,
    run_smc,
)
from tokensieve.generate.api import prompt_ids
from tokensieve.models import tiny_model

PATTERN = r"[ab]{1,2}"
MAX_TOKENS = 3


def enumerate_strings(model, tokenizer, prompt, constraint, max_tokens):
    """Exact global p(string | complete) and the locally constrained distribution.

    Walks every token path the constraint allows (a forward pass without cache per
    node), so it shares nothing with the samplers but the constraint and token bytes.
    """
    lm = TokenLM(model, tokenizer, prompt)
    global_mass: dict[str, float] = {}
    local_mass: dict[str, float] = {}

    def walk(path, data, log_p, log_local):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + path])).logits[0, -1]
        logp = torch.log_softmax(logits.double(), -1).numpy()
        options = []
        for token in range(lm.vocab_size):
            if lm.forbidden[token]:
                continue
            if token in lm.eos_ids:
                if constraint.complete(data):
                    options.append((token, None))
            elif constraint.prefix(data + lm.token_bytes[token]):
                options.append((token, data + lm.token_bytes[token]))
        if not options:
            return
        log_z = np.logaddexp.reduce([logp[t] for t, _ in options])
        for token, extended in options:
            lp, ll = log_p + logp[token], log_local + logp[token] - log_z
            if extended is None:
                text = data.decode()
                global_mass[text] = global_mass.get(text, 0) + math.exp(lp)
                local_mass[text] = local_mass.get(text, 0) + math.exp(ll)
            elif len(path) + 1 < max_tokens:
                walk(path + [token], extended, lp, ll)

    walk([], b"", 0.0, 0.0)
    total = sum(global_mass.values())
    return {k: v / total for k, v in global_mass.items()}, local_mass, total


def tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b))


@pytest.fixture(scope="module")
def problem():
    # Flat distributions (small head scale) keep the target's masses comparable.
    model, tokenizer = tiny_model(seed=0, head_scale=3.0)
    prompt = prompt_ids(tokenizer, "Letters:")
    constraint = RegexConstraint(PATTERN)
    exact, local, total = enumerate_strings(model, tokenizer, prompt, constraint, MAX_TOKENS)
    return model, tokenizer, prompt, constraint, exact, local, total


def aggregate(problem, sampler, particles, runs, resample=True):
    model, tokenizer, prompt, constraint, *_ = problem
    mass: dict[str, float] = {}
    log_marginals = []
    for seed in range(runs):
        result = run_smc(
            TokenLM(model, tokenizer, prompt),
            constraint,
            sampler,
            particles=particles,
            max_tokens=MAX_TOKENS,
            resample=resample,
            seed=seed,
        )
        for text, weight in result.distribution().items():
            mass[text] = mass.get(text, 0) + weight / runs
        log_marginals.append(result.log_marginal)
    return mass, log_marginals


def test_local_decoding_is_distorted_here(problem):
    """The test case is meaningful: local and global distributions differ."""
    *_, exact, local, _ = problem
    assert tv(exact, local) > 0.05


@pytest.mark.parametrize("sampler", [MaskingSampler(), AWRSSampler()])
def test_one_particle_samples_the_locally_constrained_distribution(problem, sampler):
    *_, local, _ = problem
    runs = 600
    mass, _ = aggregate(problem, sampler, particles=1, runs=runs, resample=False)
    counts = {k: v * runs for k, v in mass.items()}
    assert set(counts) <= set(local)
    chi2 = sum((counts.get(k, 0) - runs * p) ** 2 / (runs * p) for k, p in local.items())
    assert chi2 < 20.5, chi2  # 0.999 quantile of chi-square, 5 degrees of freedom


def test_masking_and_awrs_agree(problem):
    masking, _ = aggregate(problem, MaskingSampler(), particles=1, runs=300, resample=False)
    awrs, _ = aggregate(problem, AWRSSampler(), particles=1, runs=300, resample=False)
    assert tv(masking, awrs) < 0.12


def test_smc_approaches_the_global_conditional_as_particles_grow(problem):
    """Flat random models make the allowed mass small, so the lower-variance
    weight estimator (accepts=8) is used; the default one converges too, slower."""
    *_, exact, _, total = problem
    distances = {}
    for particles in (1, 4, 16):
        mass, _ = aggregate(problem, AWRSSampler(accepts=8), particles, runs=40)
        distances[particles] = tv(mass, exact)
    assert distances[16] < distances[4] < distances[1], distances
    assert distances[16] < 0.08, distances


def test_mean_weight_estimates_the_constraint_probability(problem):
    *_, total = problem
    _, log_marginals = aggregate(problem, AWRSSampler(accepts=4), particles=4, runs=120)
    estimates = np.exp(log_marginals)
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - total) < 4 * standard_error, (estimates.mean(), total)


def test_seed_makes_runs_reproducible(problem):
    model, tokenizer, prompt, constraint, *_ = problem
    a = run_smc(TokenLM(model, tokenizer, prompt), constraint, particles=3, max_tokens=4, seed=5)
    b = run_smc(TokenLM(model, tokenizer, prompt), constraint, particles=3, max_tokens=4, seed=5)
    assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    assert a.log_marginal == b.log_marginal


def test_all_particles_die_when_nothing_can_complete(problem):
    model, tokenizer, prompt, *_ = problem
    never = RegexConstraint(r"[a-c]{20}")  # needs more tokens than allowed
    result = run_smc(TokenLM(model, tokenizer, prompt), never, particles=3, max_tokens=3)
    assert result.completions == [] and result.log_marginal == float("-inf")


@pytest.mark.parametrize(
    "constraint",
    [
        LLGuidanceConstraint.from_lark('start: ("a" | "b")+ " " ("yes" | "no")'),
        LLGuidanceConstraint.from_json_schema({"enum": ["red", "green", "blue", [1, 2]]}),
    ],
)
def test_llguidance_token_mask_equals_per_token_checks(constraint):
    """One llguidance mask gives the same allowed set, so the same draws, as checking
    every token through the byte-level parser."""
    model, tokenizer = tiny_model(seed=1, head_scale=3.0)
    prompt = prompt_ids(tokenizer, "Go:")
    finished = 0
    for seed in range(3):
        runs = [
            run_smc(
                TokenLM(model, tokenizer, prompt),
                constraint,
                MaskingSampler(),
                particles=2,
                max_tokens=6,
                resample=False,
                seed=seed,
                token_masks=use,
            )
            for use in (True, False)
        ]
        with_masks, with_checks = runs
        assert [c.token_ids for c in with_masks.completions] == [
            c.token_ids for c in with_checks.completions
        ]
        assert with_masks.checks < with_checks.checks
        finished += len(with_checks.completions)
    assert finished > 0


def test_an_unknown_estimator_is_refused_whatever_the_method():
    from tokensieve import UserError
    from tokensieve.generate import generate

    model, tokenizer = tiny_model(seed=0)
    for method in ("masking", "awrs", "smc"):
        with pytest.raises(UserError, match="unknown AWRS estimator"):
            generate(model, tokenizer, "x", RegexConstraint("a"), method=method,
                     estimator="magic")  # fmt: skip


def test_a_tokenizer_without_an_end_token_is_refused(monkeypatch):
    """A constrained text is complete only when it ends: a tokenizer with neither EOS nor
    <|im_end|> (whose end ids are none) is refused in the library's words, as is an
    empty prompt."""
    from tokensieve import UserError
    from tokensieve.generate import language_model

    model, tokenizer = tiny_model(seed=0)
    prompt = tokenizer("a", add_special_tokens=False)["input_ids"]
    with pytest.raises(UserError, match="at least one token"):
        TokenLM(model, tokenizer, [])
    assert TokenLM(model, tokenizer, prompt).eos_ids  # the tiny tokenizer can end a text
    monkeypatch.setattr(language_model, "end_of_turn_ids", lambda tokenizer: [])
    with pytest.raises(UserError, match="no end token"):
        TokenLM(model, tokenizer, prompt)
