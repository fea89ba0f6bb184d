"""The attention function that lets a policy see attention weights without the matrix.

Policies that score with attention switch the model to ``tokensieve_scoring`` inside
`compression(...)`: the foundation's chunked routine (`tokensieve.attention`, shared with
`inspect`'s attention-received signal) computes attention chunk by chunk of query rows
and hands each chunk's weights to the policy (`KVPolicy.score` adds up over chunks of
rows); policies that read only the last rows (SnapKV's window, TOVA's newest query)
declare ``query_rows`` and the other rows run through SDPA without weights. The result
equals eager attention.
"""

from __future__ import annotations

from tokensieve.attention import chunked_attention, register, sdpa

SCORING = "tokensieve_scoring"
CHUNK = None  # query rows per chunk (None: the foundation's); tests set it small


def scoring_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """Attention whose weights go to the cache's policy chunk by chunk, never returned."""
    cache = module._tokensieve_cache
    layer = module.layer_idx
    if not cache.wants_attention(layer):  # e.g. SnapKV after the prompt
        output = sdpa(query, key, value, attention_mask, scaling)
        return output.transpose(1, 2).contiguous(), None
    wanted = cache.policy.query_rows
    rows = query.shape[2]
    first = 0 if wanted is None else max(rows - wanted, 0)
    output = chunked_attention(query, key, value, attention_mask, scaling,
                               lambda weights, *_: cache.observe(layer, weights), first,
                               CHUNK)  # fmt: skip
    return output.transpose(1, 2).contiguous(), None


register(SCORING, scoring_attention)
