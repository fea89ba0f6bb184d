"""Models with different tokenizers combined where they agree on the alphabet: bytes.

Each member is a `ByteLM`; at every byte the members' next-byte distributions (256 bytes
and the end) are combined and every member reads the same byte.
- ``mixture``: ``Σ w_i P_i(b | x)`` — what Phan et al.'s ensemble does (their code takes a
  uniform mean, `src/byte_ensemble_model.py`); weights are an option here.
- ``product``: ``Π P_i(b | x)^{w_i}``, renormalised (a product of experts; not in the
  paper). A member with no token starting with some byte would veto it, so each member's
  distribution is first mixed with 1e-6 of the uniform one.
A per-byte combination is not the mixture of whole-text probabilities; the ensemble's
probability of a text is the product of its per-byte probabilities (`byte_logprob`).
"""

from __future__ import annotations

import math

import numpy as np

from tokensieve.errors import UserError

MODES = ("mixture", "product")
FLOOR = 1e-6


class ByteEnsemble:
    def __init__(self, members, weights=None, mode: str = "mixture"):
        if len(members) < 1:
            raise UserError("an ensemble needs at least one model")
        if mode not in MODES:
            raise UserError(f"unknown ensemble mode {mode!r}; choose one of {', '.join(MODES)}")
        weights = [1.0 / len(members)] * len(members) if weights is None else list(weights)
        if len(weights) != len(members):
            raise UserError(
                f"give one weight per model: {len(members)} models, {len(weights)} weights"
            )
        if any(not w >= 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
            raise UserError(f"`weights` must be non-negative and sum to 1, got {weights}")
        self.members, self.weights, self.mode = list(members), weights, mode

    def state(self, prefix: bytes) -> EnsembleState:
        return EnsembleState(self, [m.state(prefix) for m in self.members], prefix)

    def next_byte_distribution(self, prefix: bytes) -> np.ndarray:
        return np.exp(self.state(prefix).next_logprobs())

    def byte_logprob(self, text: bytes, complete: bool = False, progress=None) -> float:
        """The chain rule of the combined per-byte distributions, natural log."""
        state, total = self.state(b""), 0.0
        for byte in text:
            total += float(state.next_logprobs()[byte])
            state = state.advance(byte)
            if progress is not None:
                progress.update(1)
        if complete:
            total += float(state.next_logprobs()[256])
        return total


class EnsembleState:
    def __init__(self, owner: ByteEnsemble, states, text: bytes):
        self.owner, self.states, self.text = owner, states, text

    def next_logprobs(self) -> np.ndarray:
        owner = self.owner
        logs = np.stack([s.next_logprobs() for s in self.states])  # [members, 257]
        weights = np.array(owner.weights)[:, None]
        with np.errstate(divide="ignore"):
            if owner.mode == "mixture":
                combined = np.log((weights * np.exp(logs)).sum(axis=0))
            else:
                floored = np.log((1 - FLOOR) * np.exp(logs) + FLOOR / logs.shape[1])
                combined = (weights * floored).sum(axis=0)
        top = combined[np.isfinite(combined)].max()
        return combined - (top + math.log(np.exp(combined - top).sum()))

    def advance(self, byte: int) -> EnsembleState:
        return EnsembleState(
            self.owner, [s.advance(byte) for s in self.states], self.text + bytes([byte])
        )
