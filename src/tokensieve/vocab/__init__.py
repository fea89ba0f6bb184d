"""Tokenizer transplantation: give a pretrained model a new vocabulary without retraining."""

from tokensieve.lazy import lazy_exports
from tokensieve.registry import Registry

INITIALIZERS = Registry(
    "method",
    {
        "tokenadapt": "tokensieve.vocab.tokenadapt:TokenAdaptInit",
        "mean": "tokensieve.vocab.initializers:MeanInit",
        "random": "tokensieve.vocab.initializers:RandomInit",
        "omp": "tokensieve.vocab.omp:OMPInit",
    },
)
METHODS = tuple(INITIALIZERS)

__all__ = [
    "INITIALIZERS",
    "METHODS",
    "Initializer",
    "MeanInit",
    "OMPInit",
    "Plan",
    "RandomInit",
    "TokenAdaptInit",
    "make_initializer",
    "transplant",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.vocab.initializers": [
            "Initializer", "MeanInit", "Plan", "RandomInit", "make_initializer",
        ],
        "tokensieve.vocab.omp": ["OMPInit"],
        "tokensieve.vocab.tokenadapt": ["TokenAdaptInit"],
        "tokensieve.vocab.transplant": ["transplant"],
    },
)  # fmt: skip
