"""Orthogonal matching pursuit over shared anchor tokens, as mergekit's tokensurgeon.

The tokens both vocabularies share are anchors. In a space where new tokens have
vectors (a donor model's embeddings of the new vocabulary, as tokensurgeon requires,
or else the auxiliary space of their texts), each new token is approximated by `k`
anchors chosen greedily (orthogonal matching pursuit: the anchor most correlated with
the residual, then least squares on all chosen); its row is the same combination of
the anchors' old rows.

One difference from tokensurgeon: for a model whose output head is not tied to its
embeddings, tokensurgeon solves a second OMP on the donor's output rows; we apply the
coefficients found on the donor's input embeddings to the old head's rows as well (one
plan for both matrices, as every initialiser here does). SmolLM2 and Gemma 3 tie them,
so the benchmark's numbers are unaffected.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError
from tokensieve.vocab.aux_space import AuxSpace, make_space
from tokensieve.vocab.initializers import Initializer


def omp(dictionary: torch.Tensor, targets: torch.Tensor, k: int):
    """Batched OMP: ``[n, d]`` atoms, ``[B, d]`` targets → (``[B, k]`` atom ids, coefficients)."""
    k = min(k, dictionary.shape[0])
    residual = targets.clone()
    chosen = torch.zeros(targets.shape[0], k, dtype=torch.long)
    coefficients = torch.zeros(targets.shape[0], 0)
    for step in range(k):
        correlation = (residual @ dictionary.T).abs()
        if step:
            correlation.scatter_(1, chosen[:, :step], -1.0)  # never pick an atom twice
        chosen[:, step] = correlation.argmax(dim=1)
        atoms = dictionary[chosen[:, : step + 1]]  # [B, step+1, d]
        solution = torch.linalg.lstsq(atoms.transpose(1, 2), targets[..., None]).solution
        coefficients = solution[..., 0]
        residual = targets - (coefficients[:, None, :] @ atoms)[:, 0]
    return chosen, coefficients


class OMPInit(Initializer):
    name = "omp"

    def __init__(
        self,
        seed: int = 0,
        space: AuxSpace | str = "auto",
        k: int = 64,
        donor_rows: torch.Tensor | None = None,
        batch_size: int = 256,
    ):
        super().__init__(seed)
        if k < 1:  # k = 0 would leave the new rows empty, not fail
            raise UserError(f"`k` must be at least 1, got {k}")
        if batch_size < 1:
            raise UserError(f"`batch_size` must be at least 1, got {batch_size}")
        self.space, self.k, self.donor_rows, self.batch_size = space, k, donor_rows, batch_size

    def vectors(self, ids: list[int], texts: list[str], old_rows, old_tokenizer) -> torch.Tensor:
        """New tokens' vectors: donor rows when given, else their texts in the aux space."""
        if self.donor_rows is not None:
            return self.donor_rows[torch.tensor(ids, dtype=torch.long)].float()
        if isinstance(self.space, str):
            self.space = make_space(self.space, old_rows, old_tokenizer)
        return self.space.embed(texts)

    def mix(self, todo, old_tokenizer, old_rows, plan):
        anchors = [(new, old) for new, old in plan.copies.items()]
        if not anchors or not todo:
            return {}
        decode = old_tokenizer.decode
        dictionary = self.vectors(
            [new for new, _ in anchors], [decode([old]) for _, old in anchors], old_rows,
            old_tokenizer,
        )  # fmt: skip
        mixtures = {}
        batches = range(0, len(todo), self.batch_size)
        for start in tqdm(batches, desc="omp", leave=False, disable=len(batches) < 4):
            batch = todo[start : start + self.batch_size]
            targets = self.vectors(
                [t.index for t in batch], [t.text for t in batch], old_rows, old_tokenizer
            )
            chosen, coefficients = omp(dictionary, targets, self.k)
            for row, token in enumerate(batch):
                ids = [anchors[a][1] for a in chosen[row].tolist()]
                mixtures[token.index] = (ids, coefficients[row].tolist())
        return mixtures
