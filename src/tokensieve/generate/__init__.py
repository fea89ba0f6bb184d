"""Controlled generation: constraints, token samplers (masking, AWRS) and SMC."""

from tokensieve.lazy import lazy_exports
from tokensieve.registry import Registry

# How each next token is drawn under a constraint (SMC runs AWRS with resampling).
SAMPLERS = Registry(
    "sampler",
    {
        "masking": "tokensieve.generate.token_samplers:MaskingSampler",
        "awrs": "tokensieve.generate.token_samplers:AWRSSampler",
    },
)
# What the answer must satisfy, by the CLI option that gives it.
CONSTRAINTS = Registry(
    "constraint",
    {
        "regex": "tokensieve.generate.constraints:RegexConstraint",
        "json-schema": "tokensieve.generate.grammar:LLGuidanceConstraint.from_json_schema",
        "grammar": "tokensieve.generate.grammar:LLGuidanceConstraint.from_lark",
        "predicate": "tokensieve.generate.constraints:PredicateConstraint.from_spec",
    },
)

__all__ = [
    "CONSTRAINTS",
    "SAMPLERS",
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
