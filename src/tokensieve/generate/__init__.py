"""Controlled generation: constraints, token samplers (masking, AWRS) and SMC."""

from tokensieve.generate.api import generate
from tokensieve.generate.constraints import Constraint, PredicateConstraint, RegexConstraint
from tokensieve.generate.grammar import LLGuidanceConstraint
from tokensieve.generate.language_model import TokenLM
from tokensieve.generate.smc import GenerationResult, run_smc
from tokensieve.generate.token_samplers import AWRSSampler, MaskingSampler, TokenSampler

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
