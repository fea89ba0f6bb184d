"""tokensieve: find the tokens that matter in a language model's work.

Score every token (entropy, surprisal, attention received), show the few that matter,
and spend compute, memory and learning signal only there.
"""

from tokensieve.errors import UserError
from tokensieve.models import load_model, tiny_model
from tokensieve.signals import (
    SIGNALS,
    TokenSignals,
    answer_signals,
    forking_tokens,
    summarize,
    text_signals,
)

__version__ = "0.1.0"

__all__ = [
    "SIGNALS",
    "TokenSignals",
    "UserError",
    "answer_signals",
    "forking_tokens",
    "load_model",
    "summarize",
    "text_signals",
    "tiny_model",
]
