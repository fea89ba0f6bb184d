"""Shared metrics: KV-cache fidelity, passkey retrieval, bits per byte."""

from tokensieve.evaluate.bits_per_byte import BitsPerByte, bits_per_byte
from tokensieve.evaluate.kv_fidelity import FidelityResult, kv_fidelity, teacher_forced_logits
from tokensieve.evaluate.passkey import PasskeyCase, make_passkey_case, passkey_accuracy

__all__ = [
    "BitsPerByte",
    "FidelityResult",
    "PasskeyCase",
    "bits_per_byte",
    "kv_fidelity",
    "make_passkey_case",
    "passkey_accuracy",
    "teacher_forced_logits",
]
