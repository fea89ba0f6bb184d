"""Controlled generation: constraints, token samplers (masking, AWRS) and SMC."""

from tokensieve.lazy import lazy_exports

__all__ = [
    "AWRSSampler",
    "Constraint",
    "GenerationResult",
    "LLGuidanceConstraint",
    "MaskingSampler",
    "PredicateConstraint",
    "RegexConstraint",
    "TokenLM",
    "TokenSampler",
    "generate",
    "run_smc",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.generate.api": ["generate"],
        "tokensieve.generate.constraints": [
            "Constraint", "PredicateConstraint", "RegexConstraint",
        ],
        "tokensieve.generate.grammar": ["LLGuidanceConstraint"],
        "tokensieve.generate.language_model": ["TokenLM"],
        "tokensieve.generate.smc": ["GenerationResult", "run_smc"],
        "tokensieve.generate.token_samplers": ["AWRSSampler", "MaskingSampler", "TokenSampler"],
    },
)  # fmt: skip
