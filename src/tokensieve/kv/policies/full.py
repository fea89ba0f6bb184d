"""The uncompressed baseline: keeps every token (the ceiling every policy is compared to)."""

from __future__ import annotations

from dataclasses import dataclass

from tokensieve.kv.policy import KVPolicy


@dataclass
class FullPolicy(KVPolicy):
    budget: float | int = 1.0
    name = "full"
    reads = "nothing"
    compresses = "never"
