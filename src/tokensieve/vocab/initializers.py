"""Initialisers: an embedding row for every token of the new vocabulary.

An initialiser makes a `Plan`: which new tokens copy an old row (the very same bytes,
so transplanting onto the same tokenizer reproduces the model exactly; special tokens
by role), which are a weighted mixture of old rows, and which are drawn at random. The
plan is computed once and applied to the input embeddings and, when untied, to the
output head, so both get the same mixing weights (as TokenAdapt does).

- `MeanInit`: the mean of the old subtokens' rows (the common baseline).
- `RandomInit`: a random direction with the mean norm of the old rows (seeded).
- `TokenAdaptInit` (tokenadapt.py) and `OMPInit` (omp.py): mixtures chosen in an
  auxiliary embedding space.

Rows nothing fills are drawn at random, in one of two ways (`Plan.draw`): ``"sphere"``, a
random direction scaled to the old rows' mean norm (every initialiser but TokenAdapt), or
``"normal"``, each entry from N(mean, std) of all the old matrix's entries, which is how
TokenAdapt's reference fills the rows its heuristics leave (Tinycompany-AI/tokenadapt,
``src/tied.py`` and ``src/untied.py``: the new matrix is ``normal_(mean, std)`` of the old
one, input and output head each with their own statistics, before rows are written).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

from tokensieve.errors import UserError
from tokensieve.lm import vocabulary_bytes


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


@dataclass
class NewToken:
    """A new-vocabulary token the old vocabulary lacks."""

    index: int
    data: bytes
    pieces: list[int]  # the old tokenizer's split of `data`

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass
class Plan:
    """How each new row is made. Rows not copied or mixed are drawn at random."""

    size: int
    copies: dict[int, int] = field(default_factory=dict)  # new id → old id
    mixtures: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)
    seed: int = 0
    draw: Literal["sphere", "normal"] = "sphere"  # see the module docstring

    def random_ids(self) -> list[int]:
        return [i for i in range(self.size) if i not in self.copies and i not in self.mixtures]

    def apply(self, old_rows: torch.Tensor) -> torch.Tensor:
        """``[V_old, d]`` rows → ``[V_new, d]``: copies, weighted sums, random rows."""
        old = old_rows.detach().float()
        rows = torch.zeros(self.size, old.shape[1])
        if self.copies:
            new_ids = torch.tensor(list(self.copies))
            rows[new_ids] = old[torch.tensor(list(self.copies.values()))]
        items = list(self.mixtures.items())
        for start in range(0, len(items), 4096):  # bounded memory for big vocabularies
            chunk = items[start : start + 4096]
            targets = torch.tensor([i for i, (ids, _) in chunk for _ in ids])
            sources = torch.tensor([s for _, (ids, _) in chunk for s in ids])
            weights = torch.tensor([w for _, (_, ws) in chunk for w in ws])
            rows.index_add_(0, targets, old[sources] * weights[:, None])
        drawn = self.random_ids()
        if drawn:
            generator = torch.Generator().manual_seed(self.seed)
            noise = torch.randn(len(drawn), old.shape[1], generator=generator)
            if self.draw == "normal":
                rows[torch.tensor(drawn)] = noise * old.std() + old.mean()
            else:
                norm = old.norm(dim=1).mean()
                rows[torch.tensor(drawn)] = noise / noise.norm(dim=1, keepdim=True) * norm
        return rows.to(old_rows.dtype)


def shared_tokens(old_tokenizer, new_tokenizer) -> dict[int, int]:
    """New id → old id for the tokens both vocabularies share: the special roles (bos,
    eos, pad, unk), then every new token whose bytes an old token has (the first such)."""
    old_lookup = first_ids(vocabulary_bytes(old_tokenizer))
    return _byte_matches(old_tokenizer, new_tokenizer, vocabulary_bytes(new_tokenizer),
                         old_lookup)  # fmt: skip


def first_ids(vocabulary: list[bytes]) -> dict[bytes, int]:
    """Bytes → the first id that spells them."""
    lookup: dict[bytes, int] = {}
    for index, data in enumerate(vocabulary):
        lookup.setdefault(data, index)
    return lookup


def _byte_matches(old_tokenizer, new_tokenizer, new_bytes, old_lookup) -> dict[int, int]:
    shared: dict[int, int] = {}
    for role in ROLES:
        old_id, new_id = getattr(old_tokenizer, role), getattr(new_tokenizer, role)
        if old_id is not None and new_id is not None and new_id not in shared:
            shared[new_id] = old_id
    for index, data in enumerate(new_bytes):
        if index not in shared and data in old_lookup:
            shared[index] = old_lookup[data]
    return shared


class Initializer(ABC):
    """Copies what the old vocabulary has; `mix` decides the rest."""

    name = "initializer"
    draw = "sphere"  # how the rows nothing fills are drawn (Plan.draw)

    def __init__(self, seed: int = 0):
        self.seed = seed

    def plan(self, old_tokenizer, new_tokenizer, old_rows: torch.Tensor,
             shared: dict[int, int] | None = None) -> Plan:  # fmt: skip
        """Copies for the tokens both vocabularies share (`shared`, new id → old id, or
        by default `shared_tokens`: the same bytes), mixtures for the rest."""
        old_bytes, new_bytes = vocabulary_bytes(old_tokenizer), vocabulary_bytes(new_tokenizer)
        old_lookup = first_ids(old_bytes)
        plan = Plan(size=len(new_bytes), seed=self.seed, draw=self.draw)
        if shared is None:  # by bytes, from the vocabularies read above
            shared = _byte_matches(old_tokenizer, new_tokenizer, new_bytes, old_lookup)
        for new_id, old_id in shared.items():
            if not (0 <= new_id < len(new_bytes) and 0 <= old_id < len(old_bytes)):
                raise UserError(f"a shared token pairs new id {new_id} with old id {old_id}, "
                                "outside the vocabularies")  # fmt: skip
            plan.copies[new_id] = old_id
        todo = [
            NewToken(index, data, split_with_old(data, old_tokenizer, old_lookup))
            for index, data in enumerate(new_bytes)
            if index not in plan.copies
        ]
        plan.mixtures = self.mix(todo, old_tokenizer, old_rows, plan)
        return plan

    @abstractmethod
    def mix(
        self, todo: list[NewToken], old_tokenizer, old_rows: torch.Tensor, plan: Plan
    ) -> dict[int, tuple[list[int], list[float]]]:
        """Mixing weights over old rows for the new tokens in `todo` (those left out
        are drawn at random). `plan.copies` holds the tokens both vocabularies share."""


class MeanInit(Initializer):
    name = "mean"

    def mix(self, todo, old_tokenizer, old_rows, plan):
        return {t.index: (t.pieces, [1 / len(t.pieces)] * len(t.pieces)) for t in todo if t.pieces}


class RandomInit(Initializer):
    name = "random"

    def mix(self, todo, old_tokenizer, old_rows, plan):
        return {}


def make_initializer(method: str, **options) -> Initializer:
    """An initialiser by its CLI name. `options` may hold every method's options (the
    CLI passes them all): those this method does not take, and ``None``, are dropped."""
    import inspect

    from tokensieve.vocab import INITIALIZERS

    accepted = inspect.signature(INITIALIZERS.load(method)).parameters
    return INITIALIZERS.build(
        method, **{k: v for k, v in options.items() if k in accepted and v is not None}
    )
