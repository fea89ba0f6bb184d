"""Shared metrics: fidelity of a compressed KV cache to the full one, passkey retrieval."""

from tokensieve.evaluate.kv_fidelity import FidelityResult, kv_fidelity, teacher_forced_logits
from tokensieve.evaluate.passkey import PasskeyCase, make_passkey_case, passkey_accuracy

__all__ = [
    "FidelityResult",
    "PasskeyCase",
    "kv_fidelity",
    "make_passkey_case",
    "passkey_accuracy",
    "teacher_forced_logits",
]
