"""Token-level samplers: draw one allowed token and a weight for it.

Each sampler returns a *properly weighted* draw: a token ``x`` and weight ``w`` with
``E[w · f(x)] = Σ_v p(v) c(v) f(v)`` for every ``f``, where ``p`` is the model's
next-token distribution and ``c(v)`` is 1 when token ``v`` keeps the constraint
satisfiable. So ``E[w] = Z``, the probability mass the constraint allows at this
step, which sequential Monte Carlo multiplies along a path to correct the myopia of
locally constrained decoding.

- `MaskingSampler` checks every token (``|V|`` checks), draws exactly from
  ``p·c / Z`` and returns ``w = Z`` exactly.
- `AWRSSampler` (Lipkin et al. 2025, "Fast Controlled Generation from Language
  Models with Adaptive Weighted Rejection Sampling") checks tokens in a
  Gumbel-perturbed order, i.e. sampling from ``p`` without replacement, until one
  passes: that token is an exact draw from ``p·c / Z`` after typically few checks.
  Its weight comes from one of three unbiased estimators (``estimator=``):
  ``"paper"``, the paper's two loops (a second loop over the tokens not rejected by
  the first; ``w = Z·(1 − rejected mass of loop 1) / (rejections of both loops + 1)``,
  as genlm-control first implemented it, commit ce559fd); ``"recursive"`` (the
  default), genlm-control's later recursive estimator (commit 983fe8e): one more check
  of the next token in the order, fewer checks but a larger spread on flat
  distributions; ``"geometric"``, genlm-control's lower-variance estimator from a
  simulated with-replacement run stopping at `accepts` accepted draws (commit 4b1872c).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tokensieve.errors import UserError

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Draw:
    """A sampled token (-1 when nothing is allowed), its log weight and checks spent."""

    token: int
    log_weight: float
    checks: int


class TokenSampler(ABC):
    """Draws a token from ``p`` restricted to what `allowed` accepts, with a weight.

    The base class drops tokens that are impossible a priori (``-inf`` log-prob:
    forbidden special tokens), renormalises, and adds the dropped mass back into the
    weight, so subclasses see a normalised distribution over candidates only.
    """

    name = "sampler"

    def sample(
        self,
        log_probs: np.ndarray,
        allowed: Callable[[int], bool],
        rng: np.random.Generator,
        mask: np.ndarray | None = None,
    ) -> Draw:
        """Args: log_probs ``[vocab]`` (log p, ``-inf`` = impossible); allowed(token);
        mask: an optional precomputed ``[vocab]`` bool mask of allowed tokens."""
        if mask is not None:
            return self._sample_with_mask(log_probs, mask, rng)
        candidates = np.flatnonzero(np.isfinite(log_probs))
        if candidates.size == 0:
            return Draw(-1, NEG_INF, 0)
        logp = log_probs[candidates]
        log_mass = float(np.logaddexp.reduce(logp))
        draw = self._sample(logp - log_mass, candidates, allowed, rng)
        if draw.token < 0:
            return draw
        return Draw(draw.token, draw.log_weight + log_mass, draw.checks)

    def _sample_with_mask(self, log_probs, mask, rng) -> Draw:
        """With the whole mask known (one call, counted as one check), sample exactly."""
        kept = np.flatnonzero(mask & np.isfinite(log_probs))
        if kept.size == 0:
            return Draw(-1, NEG_INF, 1)
        log_z = float(np.logaddexp.reduce(log_probs[kept]))
        probs = np.exp(log_probs[kept] - log_z)
        return Draw(int(kept[rng.choice(kept.size, p=probs / probs.sum())]), log_z, 1)

    @abstractmethod
    def _sample(
        self,
        logp: np.ndarray,
        candidates: np.ndarray,
        allowed: Callable[[int], bool],
        rng: np.random.Generator,
    ) -> Draw:
        """`logp` is normalised over `candidates` (token ids)."""


class MaskingSampler(TokenSampler):
    """Token masking: check the whole vocabulary, then sample exactly."""

    name = "masking"

    def _sample(self, logp, candidates, allowed, rng) -> Draw:
        mask = np.fromiter((allowed(int(v)) for v in candidates), bool, len(candidates))
        if not mask.any():
            return Draw(-1, NEG_INF, len(candidates))
        kept = logp[mask]
        log_z = float(np.logaddexp.reduce(kept))
        probs = np.exp(kept - log_z)
        choice = rng.choice(len(kept), p=probs / probs.sum())
        return Draw(int(candidates[mask][choice]), log_z, len(candidates))


class AWRSSampler(TokenSampler):
    """Adaptive weighted rejection sampling: few checks, exact draw, unbiased weight.

    Args:
        estimator: ``"recursive"`` (default), ``"paper"`` or ``"geometric"`` (see the
            module docstring). ``accepts > 2`` with the default picks ``"geometric"``.
        accepts: accepted draws the geometric estimator waits for (at least 2): more
            checks, lower variance (useful when the allowed mass is small).
    """

    name = "awrs"
    ESTIMATORS = ("recursive", "paper", "geometric")

    def __init__(self, accepts: int = 2, estimator: str = "recursive"):
        if estimator not in self.ESTIMATORS:
            raise UserError(f"unknown AWRS estimator {estimator!r}; choose one of "
                            f"{', '.join(self.ESTIMATORS)}")  # fmt: skip
        if accepts < 2:
            raise UserError("accepts must be at least 2 for an unbiased weight")
        if accepts > 2 and estimator == "paper":
            raise UserError("accepts > 2 is the geometric estimator's; the paper's has two "
                            "loops, each ending at its first accepted token")  # fmt: skip
        self.accepts = accepts
        self.estimator = "geometric" if estimator == "recursive" and accepts > 2 else estimator

    def _sample(self, logp, candidates, allowed, rng) -> Draw:
        if self.estimator == "geometric":
            return self._sample_geometric(logp, candidates, allowed, rng)
        if self.estimator == "paper":
            return self._sample_two_loops(logp, candidates, allowed, rng)
        keys = logp + rng.gumbel(size=len(logp))
        order = np.argsort(-keys)  # a draw without replacement from p, in order
        checks = 0
        remaining = 1.0  # probability mass not yet rejected
        log_remaining = 0.0  # log of it, accumulated stably as Σ log(1 - q)
        for position, item in enumerate(order):
            last = position == len(order) - 1
            q = 1.0 if last else min(1.0, math.exp(logp[item]) / remaining)
            checks += 1
            if allowed(int(candidates[item])):
                follow_up = None
                if not last and q < 1.0:
                    checks += 1
                    follow_up = allowed(int(candidates[order[position + 1]]))
                log_weight = log_remaining + _awrs_weight(q, follow_up)
                return Draw(int(candidates[item]), log_weight, checks)
            if last or q >= 1.0:
                break
            log_remaining += math.log1p(-q)
            remaining -= math.exp(logp[item])
            if remaining <= 1e-12:
                break
        return Draw(-1, NEG_INF, checks)

    def _sample_two_loops(self, logp, candidates, allowed, rng) -> Draw:
        """The paper's estimator. Loop 1 samples without replacement until a token
        passes (the draw); loop 2 does it again from ``p`` without loop 1's rejected
        tokens (the drawn one may come again, and is not checked twice). With ``N`` the
        rejections of both loops, ``w = (1 − Σ_{loop-1 rejected} p) / (N + 1)``."""
        logp = logp.copy()
        checks = rejections = 0
        first, mass_left = -1, 1.0
        for loop in range(2):
            keys = logp + rng.gumbel(size=len(logp))
            for item in np.argsort(-keys):
                if not np.isfinite(keys[item]):
                    break
                if item == first:
                    break  # known to pass
                checks += 1
                if allowed(int(candidates[item])):
                    first = int(item) if first < 0 else first
                    break
                rejections += 1
                logp[item] = NEG_INF  # rejected for the rest of this loop and the next
            if first < 0:
                return Draw(-1, NEG_INF, checks)  # nothing passes
            if loop == 0:  # the mass loop 1 did not reject
                mass_left = float(np.exp(logp[np.isfinite(logp)]).sum())
        return Draw(int(candidates[first]), math.log(mass_left / (rejections + 1)), checks)

    def _sample_geometric(self, logp, candidates, allowed, rng) -> Draw:
        """Simulate sampling *with* replacement until `accepts` draws pass.

        Inverse binomial sampling: with ``r`` accepted among ``n`` with-replacement
        draws, ``(r - 1) / (n - 1)`` is an unbiased estimate of the allowed mass, and
        it is independent of which token passed first (an exact draw), so the pair is
        properly weighted. Rejected tokens are never re-checked: the with-replacement
        draws that would land on them are added as geometric "phantom" rejections.
        """
        logp = logp.copy()
        probs = np.exp(logp)
        rejected_mass, accepted, rejected, checks = 0.0, 0, 0, 0
        known_allowed: set[int] = set()
        first = -1
        for _ in range(self.accepts):
            keys = logp + rng.gumbel(size=len(logp))
            found = False
            for item in np.argsort(-keys):
                if not np.isfinite(keys[item]) or rejected_mass >= 1.0 - 1e-12:
                    break
                if rejected_mass > 0:
                    rejected += int(rng.geometric(1.0 - rejected_mass)) - 1
                if item not in known_allowed:
                    checks += 1
                    if not allowed(int(candidates[item])):
                        rejected += 1
                        rejected_mass += probs[item]
                        logp[item] = NEG_INF
                        continue
                    known_allowed.add(int(item))
                accepted += 1
                first = int(candidates[item]) if first < 0 else first
                found = True
                break
            if not found:
                break
        if accepted < self.accepts:
            return Draw(-1, NEG_INF, checks)
        estimate = (accepted - 1) / (accepted + rejected - 1)
        return Draw(first, math.log(estimate), checks)


def _awrs_weight(q: float, next_allowed: bool | None) -> float:
    """Log of the tail estimate at the first accepted token.

    With ``s`` the candidates not yet rejected, ``Z_s / M_s`` (allowed over remaining
    mass) satisfies ``Z_s/M_s = q·c(x) + (1-q)·Z_{s∖x}/M_{s∖x}`` for the drawn ``x``
    (``q = p(x)/M_s``). Each rejection multiplies by ``1 - q`` (accumulated by the
    caller); at the accepted ``x`` the remaining ratio is estimated by one coin flip,
    the check of the next token in the order: ``q + (1 - q)·c(next)``.
    """
    if next_allowed is None:
        return 0.0
    return 0.0 if next_allowed else math.log(q)
