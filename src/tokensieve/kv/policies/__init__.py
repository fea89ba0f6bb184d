"""One small `KVPolicy` subclass per method; `POLICIES` maps CLI names to classes.

Adding a policy: its module here, and one line in `POLICIES`.
"""

from tokensieve.lazy import lazy_exports
from tokensieve.registry import Registry

POLICIES = Registry(
    "policy",
    {
        "full": "tokensieve.kv.policies.full:FullPolicy",
        "streaming": "tokensieve.kv.policies.streaming:StreamingPolicy",
        "h2o": "tokensieve.kv.policies.h2o:H2OPolicy",
        "keyformer": "tokensieve.kv.policies.keyformer:KeyformerPolicy",
        "snapkv": "tokensieve.kv.policies.snapkv:SnapKVPolicy",
        "tova": "tokensieve.kv.policies.tova:TOVAPolicy",
        "random": "tokensieve.kv.policies.random_eviction:RandomPolicy",
        "sirllm": "tokensieve.kv.policies.sirllm:SirLLMPolicy",
        "tokenselect": "tokensieve.kv.policies.tokenselect:TokenSelectPolicy",
        "tidaldecode": "tokensieve.kv.policies.tidaldecode:TidalDecodePolicy",
    },
)

__all__ = [
    "POLICIES",
    "FullPolicy",
    "H2OPolicy",
    "KeyformerPolicy",
    "RandomPolicy",
    "SirLLMPolicy",
    "SnapKVPolicy",
    "StreamingPolicy",
    "TOVAPolicy",
    "TidalDecodePolicy",
    "TokenSelectPolicy",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.kv.policies.full": ["FullPolicy"],
        "tokensieve.kv.policies.h2o": ["H2OPolicy"],
        "tokensieve.kv.policies.keyformer": ["KeyformerPolicy"],
        "tokensieve.kv.policies.random_eviction": ["RandomPolicy"],
        "tokensieve.kv.policies.sirllm": ["SirLLMPolicy"],
        "tokensieve.kv.policies.snapkv": ["SnapKVPolicy"],
        "tokensieve.kv.policies.streaming": ["StreamingPolicy"],
        "tokensieve.kv.policies.tidaldecode": ["TidalDecodePolicy"],
        "tokensieve.kv.policies.tokenselect": ["TokenSelectPolicy"],
        "tokensieve.kv.policies.tova": ["TOVAPolicy"],
    },
)
