"""Sequential Monte Carlo over particles, with any token sampler as the proposal.

Every particle extends its text one token at a time with a properly weighted token
sampler (AWRS by default) and multiplies its weight by the sampler's estimate of the
allowed mass. When the effective sample size ``(Σw)² / Σw²`` drops below
``ess_threshold · N`` the particles are resampled (multinomial), their weights reset to 1
and the mean weight carried into the running marginal (equivalent to resetting every
weight to the mean), so the weighted particles approach the *global* conditional
``p(x | constraint complete)`` over whole strings as N grows, which locally
constrained decoding alone does not (it over-weights paths that dead-end later).

The mean final weight (times the resampling factors) is an unbiased estimate of the
probability that the model's output satisfies the constraint within `max_tokens`.
At the last step a particle whose text is complete ends there (weight times
p(end-of-turn)); the others die, as genlm-control 0.4 does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from tokensieve.generate.constraints import Constraint
from tokensieve.generate.language_model import TokenLM
from tokensieve.generate.token_samplers import AWRSSampler, Draw, MaskingSampler, TokenSampler

NEG_INF = float("-inf")


@dataclass
class Particle:
    token_ids: list[int] = field(default_factory=list)
    data: bytes = b""
    log_weight: float = 0.0
    finished: bool = False
    row: int = 0  # its row in the language model's KV cache while running

    @property
    def alive(self) -> bool:
        return self.log_weight > NEG_INF

    def copy(self) -> Particle:
        return Particle(list(self.token_ids), self.data, self.log_weight, self.finished, self.row)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    log_weight: float
    weight: float  # normalised over the run's particles


@dataclass
class GenerationResult:
    """Weighted completions and what they cost."""

    sampler: str
    particles: int
    completions: list[Completion]
    log_marginal: float  # log estimate of P(constraint satisfied within max_tokens)
    checks: int
    tokens: int  # tokens sampled, summed over particles
    seconds: float
    resamples: int = 0

    @property
    def checks_per_token(self) -> float:
        return self.checks / max(self.tokens, 1)

    @property
    def ms_per_token(self) -> float:
        return 1000 * self.seconds / max(self.tokens, 1)

    def distribution(self) -> dict[str, float]:
        """Normalised weight per distinct completion text."""
        out: dict[str, float] = {}
        for completion in self.completions:
            out[completion.text] = out.get(completion.text, 0.0) + completion.weight
        return out

    def to_dict(self) -> dict:
        return {
            "sampler": self.sampler,
            "particles": self.particles,
            "log_marginal": None if math.isinf(self.log_marginal) else self.log_marginal,
            "checks": self.checks,
            "tokens": self.tokens,
            "checks_per_token": self.checks_per_token,
            "ms_per_token": self.ms_per_token,
            "resamples": self.resamples,
            "completions": [
                {"text": c.text, "weight": c.weight, "log_weight": c.log_weight}
                for c in self.completions
            ],
        }


def _log_mean_exp(values: list[float]) -> float:
    array = np.asarray(values, dtype=float)
    if not np.isfinite(array).any():
        return NEG_INF
    return float(np.logaddexp.reduce(array) - math.log(len(array)))


def effective_sample_size(log_weights: list[float]) -> float:
    array = np.asarray(log_weights, dtype=float)
    if not np.isfinite(array).any():
        return 0.0
    w = np.exp(array - array.max())
    return float(w.sum() ** 2 / (w**2).sum())


def run_smc(
    lm: TokenLM,
    constraint: Constraint,
    sampler: TokenSampler | None = None,
    *,
    particles: int = 5,
    max_tokens: int = 32,
    ess_threshold: float = 0.5,
    resample: bool = True,
    seed: int = 0,
    progress: bool = False,
    token_masks: bool = True,
) -> GenerationResult:
    """Run `particles` weighted particles for at most `max_tokens` tokens each.

    With ``resample=False`` the particles are independent (importance sampling); one
    particle with `MaskingSampler` is plain locally constrained decoding. When the
    sampler is masking and the constraint offers ``token_mask`` (llguidance grammars),
    that one call replaces per-token checks, unless ``token_masks=False``.
    """
    use_masks = (
        token_masks and isinstance(sampler, MaskingSampler) and hasattr(constraint, "token_mask")
    )
    sampler = sampler or AWRSSampler()
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    population = [Particle(row=i) for i in range(particles)]
    log_probs = lm.start(particles)
    counts = {"checks": 0, "tokens": 0, "resamples": 0}
    log_marginal = 0.0
    bar = tqdm(
        total=max_tokens, desc=f"{sampler.name} x{particles}", disable=not progress, leave=False
    )
    try:
        for step in range(max_tokens):
            running = [p for p in population if p.alive and not p.finished]
            if not running:
                break
            last = step == max_tokens - 1
            for particle in running:
                draw = _draw(particle, log_probs, lm, constraint, sampler, rng, use_masks, last)
                counts["checks"] += draw.checks
                counts["tokens"] += 1
                _extend(particle, draw, lm)
            bar.update(1)
            weights = [p.log_weight for p in population]
            if not any(p.alive for p in population):
                break
            ess = effective_sample_size(weights)
            if resample and particles > 1 and ess < ess_threshold * particles:
                log_marginal += _log_mean_exp(weights)
                population = _resample(population, weights, rng)
                counts["resamples"] += 1
            if not last:
                log_probs = _step_running(population, log_probs, lm)
    finally:
        bar.close()
    return _result(population, sampler, log_marginal, counts, time.perf_counter() - started)


def _draw(particle, log_probs, lm, constraint, sampler, rng, use_masks: bool, last: bool):
    """One token for `particle`; at the last allowed step only an ending can be drawn."""
    if last:  # only an ending can still reach the target: force it
        return _forced_end(log_probs[particle.row], particle, lm, constraint)
    mask = constraint.token_mask(lm, particle.token_ids) if use_masks else None
    allowed = _allowed(particle, lm, constraint)
    return sampler.sample(_masked(log_probs[particle.row], lm), allowed, rng, mask)


def _step_running(population: list[Particle], log_probs, lm: TokenLM):
    """Advance the model by each running particle's last token (rows follow resampling)."""
    running = [p for p in population if p.alive and not p.finished]
    if not running:
        return log_probs
    rows = [p.row for p in running]
    if rows != list(range(log_probs.shape[0])):
        lm.select(rows)
    log_probs = lm.step([p.token_ids[-1] for p in running])
    for row, particle in enumerate(running):
        particle.row = row
    return log_probs


def _result(population, sampler, log_marginal: float, counts: dict, seconds: float):
    """Unfinished particles leave the target; the rest are weighted completions."""
    for particle in population:
        if not particle.finished:  # ran out of tokens: outside the target
            particle.log_weight = NEG_INF
    final = [p.log_weight for p in population]
    log_marginal += _log_mean_exp(final)
    total = _log_mean_exp(final) + math.log(len(population))
    completions = [
        Completion(
            text=p.data.decode("utf-8", errors="replace"),
            token_ids=p.token_ids,
            log_weight=p.log_weight,
            weight=math.exp(p.log_weight - total) if p.alive else 0.0,
        )
        for p in population
        if p.alive
    ]
    completions.sort(key=lambda c: -c.weight)
    return GenerationResult(
        sampler=sampler.name,
        particles=len(population),
        completions=completions,
        log_marginal=log_marginal if completions else NEG_INF,
        checks=counts["checks"],
        tokens=counts["tokens"],
        seconds=seconds,
        resamples=counts["resamples"],
    )


def _extend(particle: Particle, draw, lm: TokenLM) -> None:
    """Apply one token draw: multiply the weight, append the token or end the text."""
    if draw.token < 0:
        particle.log_weight = NEG_INF
        return
    particle.log_weight += draw.log_weight
    particle.token_ids.append(draw.token)
    if draw.token in lm.eos_ids:
        particle.finished = True
    else:
        particle.data += lm.token_bytes[draw.token]


def _forced_end(log_probs: np.ndarray, particle: Particle, lm: TokenLM, constraint) -> Draw:
    """At the last allowed step only the end-of-turn token keeps a particle in the
    target (texts that end within `max_tokens`), so it is taken with weight
    ``p(end)`` when the text is complete, and the particle dies otherwise: the same
    target as sampling there, with no variance spent on tokens that must die."""
    if not constraint.complete(particle.data):
        return Draw(-1, NEG_INF, 1)
    ends = sorted(lm.eos_ids)  # any of them ends the text the same way
    log_mass = float(np.logaddexp.reduce(log_probs[ends]))
    return Draw(ends[int(np.argmax(log_probs[ends]))], log_mass, 1)


def _resample(population: list[Particle], log_weights: list[float], rng) -> list[Particle]:
    """Multinomial resampling; every copy starts again from weight 1."""
    normalised = np.exp(np.asarray(log_weights) - max(log_weights))
    picks = rng.choice(len(population), size=len(population), p=normalised / normalised.sum())
    copies = [population[i].copy() for i in picks]
    for particle in copies:
        particle.log_weight = 0.0
    return copies


def _masked(log_probs: np.ndarray, lm: TokenLM) -> np.ndarray:
    out = log_probs.copy()
    out[lm.forbidden] = NEG_INF
    return out


def _allowed(particle: Particle, lm: TokenLM, constraint: Constraint):
    """The check a sampler calls: the end-of-turn token needs a complete text."""
    data = particle.data

    def allowed(token: int) -> bool:
        if token in lm.eos_ids:
            return constraint.complete(data)
        return constraint.prefix(data + lm.token_bytes[token])

    return allowed
