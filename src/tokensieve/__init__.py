"""tokensieve: find the tokens that matter in a language model's work.

Score every token (entropy, surprisal, attention received), show the few that matter,
and spend compute, memory and learning signal only there. Members are imported on first
use (`tokensieve.lazy`), so importing the package does not load torch.
"""

from tokensieve.errors import UserError
from tokensieve.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.models": ["load_model", "tiny_model"],
        "tokensieve.signal_names": ["SIGNALS"],
        "tokensieve.scoring": ["forking_tokens"],
        "tokensieve.inspect.signals": [
            "TokenSignals", "answer_signals", "summarize", "text_signals",
        ],
    },
)  # fmt: skip
