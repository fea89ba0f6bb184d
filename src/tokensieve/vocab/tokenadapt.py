"""TokenAdapt (Sharthak et al., 2025): a hybrid of local and global heuristics.

For a new token with text ``s`` (per the reference code, Tinycompany-AI/tokenadapt):

- local: the old tokenizer splits ``s`` into pieces ``s_i``; with ``c_i`` the cosine of
  aux(s) and aux(s_i) and ``len_i = len(s_i)/len(s)`` (characters),
  ``w = softmax(((softmax(c)_i + len_i) / 2) / (τ + 1e-5))`` and ``e_local = Σ w_i E[s_i]``;
- global: the `top_k` old tokens nearest to aux(s) by cosine, weights
  ``softmax(sim / τ)`` with those below `threshold` zeroed and the rest renormalised;
- hybrid: ``(1 − λ)·e_local + λ·e_global``; if one side fails, the other alone.

Defaults τ = 0.3, top_k = 3, λ = 0.3, threshold = 0 (the reference's). A token both
sides fail for keeps a row drawn as the reference draws it: each entry from N(mean, std) of
the old matrix (``draw = "normal"``, see initializers.py).

Differences from the reference, shared by every initialiser here (`initializers.Plan`):
tokens both vocabularies share are matched by their bytes, not by their vocabulary
strings, and special tokens (BOS, EOS, PAD, ...) by their role; the reference matches raw
strings and has no path of its own for special tokens. The new model's BOS/EOS/PAD ids are
the new tokenizer's, without the reference's fallbacks (PAD from EOS, EOS from BOS).
"""

from __future__ import annotations

import math

import torch

from tokensieve.errors import UserError
from tokensieve.vocab.aux_space import AuxSpace, make_space
from tokensieve.vocab.initializers import Initializer


class TokenAdaptInit(Initializer):
    name = "tokenadapt"
    draw = "normal"

    def __init__(
        self,
        seed: int = 0,
        space: AuxSpace | str = "auto",
        temperature: float = 0.3,
        top_k: int = 3,
        weight: float = 0.3,
        threshold: float = 0.0,
    ):
        super().__init__(seed)
        # checked here, not where they are used: a bad value would not raise there but
        # write NaN, infinite or zero rows into the new model
        if not (math.isfinite(temperature) and temperature >= 0):
            raise UserError(f"`temperature` must be a number ≥ 0, got {temperature}")
        if top_k < 1:
            raise UserError(f"`top_k` must be at least 1, got {top_k}")
        if not 0.0 <= weight <= 1.0:
            raise UserError(f"`weight` must be in [0, 1] (the global share), got {weight}")
        if not math.isfinite(threshold):
            raise UserError(f"`threshold` must be a number, got {threshold}")
        self.space, self.temperature, self.top_k = space, temperature, top_k
        self.weight, self.threshold = weight, threshold

    def mix(self, todo, old_tokenizer, old_rows, plan):
        if not todo:
            return {}
        space = self.space
        if isinstance(space, str):
            space = make_space(space, old_rows, old_tokenizer)
        old_aux = space.vocabulary(old_tokenizer)
        texts = [t.text for t in todo]
        new_aux = space.embed(texts)
        lengths = [len(old_tokenizer.decode([i])) for i in range(len(old_tokenizer))]
        mixtures = {}
        for start in range(0, len(todo), 1024):
            sims = new_aux[start : start + 1024] @ old_aux.T
            top = sims.topk(min(self.top_k, sims.shape[1]), dim=1)
            for row, token in enumerate(todo[start : start + 1024]):
                local = self.local(new_aux[start + row], old_aux, token, lengths)
                glob = self.global_(top.values[row], top.indices[row])
                mixture = self.hybrid(local, glob)
                if mixture is not None:
                    mixtures[token.index] = mixture
        return mixtures

    def local(self, aux, old_aux, token, lengths):
        if not token.pieces or not token.text:
            return None
        pieces = torch.tensor(token.pieces)
        similarity = torch.softmax(old_aux[pieces] @ aux, dim=0)
        share = torch.tensor([lengths[i] / len(token.text) for i in token.pieces])
        weights = torch.softmax(((similarity + share) / 2) / (self.temperature + 1e-5), dim=0)
        return token.pieces, weights.tolist()

    def global_(self, sims, indices):
        weights = torch.softmax(sims / (self.temperature + 1e-5), dim=0)
        weights = torch.where(sims < self.threshold, torch.zeros_like(weights), weights)
        if float(weights.sum()) <= 0:
            return None
        return indices.tolist(), (weights / weights.sum()).tolist()

    def hybrid(self, local, glob):
        if local is None or glob is None:
            return local or glob
        ids = local[0] + glob[0]
        weights = [(1 - self.weight) * w for w in local[1]] + [self.weight * w for w in glob[1]]
        return ids, weights
