"""Random eviction: the floor any scoring policy must beat (seeded, reproducible)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokensieve.kv.policy import KVPolicy


@dataclass
class RandomPolicy(KVPolicy):
    seed: int = 0
    name = "random"
    reads = "nothing"
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.generator = torch.Generator().manual_seed(self.seed)

    def rank(self, scores):
        return torch.rand(scores.shape, generator=self.generator).to(scores.device)
