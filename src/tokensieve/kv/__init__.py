"""KV-cache key-token compression: one cache, one small policy per paper."""

from tokensieve.kv.policies import POLICIES
from tokensieve.lazy import lazy_exports


def make_policy(name: str, **options):
    """A policy by its CLI name (``keyformer``, ``h2o``, ...) with its options."""
    return POLICIES.build(name, **options)


__all__ = [
    "POLICIES",
    "Budget",
    "Seen",
    "SelectionPolicy",
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.kv.cache": ["CompressedCache", "CompressedLayer", "compression"],
        "tokensieve.kv.policy": ["Budget", "KVPolicy", "Seen"],
        "tokensieve.kv.selection": ["SelectionPolicy"],
        "tokensieve.kv.policies": [
            "FullPolicy", "H2OPolicy", "KeyformerPolicy", "RandomPolicy", "SirLLMPolicy",
            "SnapKVPolicy", "StreamingPolicy", "TOVAPolicy", "TidalDecodePolicy",
            "TokenSelectPolicy",
        ],
    },
)  # fmt: skip
