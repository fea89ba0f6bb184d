"""A tokenized language model read as a model over bytes: next-byte distributions,
continuations of prompts that end anywhere (inside a word, inside a character), and
ensembles of models whose tokenizers differ."""

from tokensieve.lazy import lazy_exports

__all__ = ["ByteEnsemble", "ByteLM", "ByteVocabulary", "continue_bytes"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.bytes.byte_model": ["ByteLM"],
        "tokensieve.bytes.ensemble": ["ByteEnsemble"],
        "tokensieve.bytes.sampling": ["continue_bytes"],
        "tokensieve.bytes.vocabulary": ["ByteVocabulary"],
    },
)
