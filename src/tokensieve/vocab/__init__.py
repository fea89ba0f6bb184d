"""Tokenizer transplantation: give a pretrained model a new vocabulary without retraining."""

from tokensieve.vocab.initializers import (
    METHODS,
    Initializer,
    MeanInit,
    Plan,
    RandomInit,
    make_initializer,
)
from tokensieve.vocab.omp import OMPInit
from tokensieve.vocab.tokenadapt import TokenAdaptInit
from tokensieve.vocab.transplant import transplant

__all__ = [
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
