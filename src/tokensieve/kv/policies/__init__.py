"""One small `KVPolicy` subclass per method; `POLICIES` maps CLI names to classes."""

from tokensieve.kv.policies.full import FullPolicy
from tokensieve.kv.policies.h2o import H2OPolicy
from tokensieve.kv.policies.keyformer import KeyformerPolicy
from tokensieve.kv.policies.random_eviction import RandomPolicy
from tokensieve.kv.policies.sirllm import SirLLMPolicy
from tokensieve.kv.policies.snapkv import SnapKVPolicy
from tokensieve.kv.policies.streaming import StreamingPolicy
from tokensieve.kv.policies.tidaldecode import TidalDecodePolicy
from tokensieve.kv.policies.tokenselect import TokenSelectPolicy
from tokensieve.kv.policies.tova import TOVAPolicy

POLICIES = {
    policy.name: policy
    for policy in (
        FullPolicy,
        StreamingPolicy,
        H2OPolicy,
        KeyformerPolicy,
        SnapKVPolicy,
        TOVAPolicy,
        RandomPolicy,
        SirLLMPolicy,
        TokenSelectPolicy,
        TidalDecodePolicy,
    )
}

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
