"""Tokenizer transplantation: give a pretrained model a new vocabulary without retraining."""

from tokensieve.vocab.initializers import INITIALIZERS, Initializer, MeanInit, RandomInit
from tokensieve.vocab.transplant import transplant

__all__ = ["INITIALIZERS", "Initializer", "MeanInit", "RandomInit", "transplant"]
