"""KV-cache key-token compression: one cache, one small policy per paper."""

from tokensieve.kv.cache import CompressedCache, CompressedLayer, compression
from tokensieve.kv.policies import (
    POLICIES,
    FullPolicy,
    H2OPolicy,
    KeyformerPolicy,
    RandomPolicy,
    SirLLMPolicy,
    SnapKVPolicy,
    StreamingPolicy,
    TidalDecodePolicy,
    TokenSelectPolicy,
    TOVAPolicy,
)
from tokensieve.kv.policy import KVPolicy


def make_policy(name: str, **options) -> KVPolicy:
    """A policy by its CLI name (``keyformer``, ``h2o``, ...) with its options."""
    from tokensieve.errors import UserError

    if name not in POLICIES:
        raise UserError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name](**options)


__all__ = [
    "POLICIES",
    "CompressedCache",
    "CompressedLayer",
    "FullPolicy",
    "H2OPolicy",
    "KVPolicy",
    "KeyformerPolicy",
    "RandomPolicy",
    "SirLLMPolicy",
    "SnapKVPolicy",
    "StreamingPolicy",
    "TOVAPolicy",
    "TidalDecodePolicy",
    "TokenSelectPolicy",
    "compression",
    "make_policy",
]
