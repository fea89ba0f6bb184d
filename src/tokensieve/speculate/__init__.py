"""Lossless faster greedy decoding from tokens the model already considered.

A drafter guesses a small tree of next tokens; one forward verifies the whole tree; the
longest path the model agrees with is kept. The output is greedy decoding's, token for
token. Drafters: Token Recycling (the model's own runners-up, kept in an adjacency
matrix), Lookahead Decoding (n-grams from Jacobi iterations run beside verification),
Lookahead with a trie (sequences seen in prompts and outputs) and prompt lookup.
"""

from tokensieve.lazy import lazy_exports
from tokensieve.registry import Registry

# The CLI's --method names; each builds a `tokensieve.speculate.drafter.Drafter`.
DRAFTERS = Registry(
    "speculation method",
    {
        "recycling": "tokensieve.speculate.recycling:TokenRecycling",
        "lookahead": "tokensieve.speculate.lookahead:LookaheadDecoding",
        "lookahead-trie": "tokensieve.speculate.lookahead_trie:LookaheadTrie",
        "prompt-lookup": "tokensieve.speculate.prompt_lookup:PromptLookup",
    },
)

# Draft nodes per forward when none is given: recycling's 2 paid best of the sizes
# `make bench-speculate` measured on a 2-core CPU (1.23x; 16 nodes commit more per forward
# but cost 2x a step); `tree_size=80` is the authors' tree, made for GPUs.
DEFAULT_TREE = {"recycling": 2, "lookahead": 16, "lookahead-trie": 16, "prompt-lookup": 10}

__all__ = [
    "DEFAULT_TREE",
    "DRAFTERS",
    "Draft",
    "Drafter",
    "LookaheadDecoding",
    "LookaheadTrie",
    "PromptLookup",
    "SpeculationResult",
    "TokenRecycling",
    "plain_greedy",
    "speculate",
    "speculative_generate",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.speculate.api": ["plain_greedy", "speculate"],
        "tokensieve.speculate.decode": ["SpeculationResult", "speculative_generate"],
        "tokensieve.speculate.drafter": ["Drafter"],
        "tokensieve.speculate.lookahead": ["LookaheadDecoding"],
        "tokensieve.speculate.lookahead_trie": ["LookaheadTrie"],
        "tokensieve.speculate.prompt_lookup": ["PromptLookup"],
        "tokensieve.speculate.recycling": ["TokenRecycling"],
        "tokensieve.speculate.tree": ["Draft"],
    },
)  # fmt: skip
