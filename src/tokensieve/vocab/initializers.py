"""Initialisers: an embedding row for every token of the new vocabulary.

Every initialiser first copies the rows of tokens the old vocabulary has with the very
same bytes (so transplanting onto the same tokenizer reproduces the model exactly) and
maps special tokens by role (bos, eos, pad, unk, chat markers by content). The rest is
the initialiser's job; it sees each new token as the old tokenizer's split of its bytes.

- `MeanInit`: the mean of the old subtokens' rows (the common baseline).
- `RandomInit`: a random direction with the mean norm of the old rows (seeded).
TokenAdapt and OMP come in a later slice (issue 6).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from tokensieve.signals import token_bytes


def byte_table(tokenizer) -> list[bytes]:
    return token_bytes(tokenizer, range(len(tokenizer)))


def split_with_old(data: bytes, old_tokenizer, old_lookup: dict[bytes, int]) -> list[int]:
    """Old token ids whose bytes concatenate to `data` (UTF-8 text via the tokenizer;
    bytes that are not valid UTF-8 one byte-token at a time)."""
    try:
        text = data.decode("utf-8")
        ids = old_tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids:
            return ids
    except UnicodeDecodeError:
        pass
    return [old_lookup[bytes([b])] for b in data if bytes([b]) in old_lookup]


ROLES = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


class Initializer(ABC):
    name = "initializer"

    def __call__(self, old_rows: torch.Tensor, old_tokenizer, new_tokenizer) -> torch.Tensor:
        """``[V_old, d]`` rows → ``[V_new, d]`` rows for `new_tokenizer`'s vocabulary."""
        old_bytes, new_bytes = byte_table(old_tokenizer), byte_table(new_tokenizer)
        old_lookup: dict[bytes, int] = {}
        for index, data in enumerate(old_bytes):
            old_lookup.setdefault(data, index)
        new_rows = torch.zeros(len(new_bytes), old_rows.shape[1], dtype=old_rows.dtype)
        done = torch.zeros(len(new_bytes), dtype=torch.bool)
        for role in ROLES:
            old_id, new_id = getattr(old_tokenizer, role), getattr(new_tokenizer, role)
            if old_id is not None and new_id is not None and not done[new_id]:
                new_rows[new_id], done[new_id] = old_rows[old_id], True
        for index, data in enumerate(new_bytes):
            if not done[index] and data in old_lookup:
                new_rows[index], done[index] = old_rows[old_lookup[data]], True
        for index in torch.nonzero(~done).flatten().tolist():
            pieces = split_with_old(new_bytes[index], old_tokenizer, old_lookup)
            new_rows[index] = self.initialize(old_rows, pieces, index)
        return new_rows

    @abstractmethod
    def initialize(self, old_rows: torch.Tensor, pieces: list[int], index: int) -> torch.Tensor:
        """The row of a new token the old vocabulary lacks, split into old `pieces`."""


class MeanInit(Initializer):
    name = "mean"

    def initialize(self, old_rows, pieces, index):
        if not pieces:
            return old_rows.mean(0)
        return old_rows[pieces].mean(0)


class RandomInit(Initializer):
    name = "random"

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def initialize(self, old_rows, pieces, index):
        direction = torch.randn(old_rows.shape[1], generator=self.generator)
        norm = old_rows.float().norm(dim=1).mean()
        return (direction / direction.norm() * norm).to(old_rows.dtype)


INITIALIZERS = {"mean": MeanInit, "random": RandomInit}
