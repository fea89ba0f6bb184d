"""Shared metrics: KV-cache fidelity, passkey retrieval, bits per byte."""

from tokensieve.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.evaluate.bits_per_byte": ["BitsPerByte", "bits_per_byte"],
        "tokensieve.evaluate.kv_fidelity": [
            "FidelityResult", "kv_fidelity", "teacher_forced_logits",
        ],
        "tokensieve.evaluate.passkey": ["PasskeyCase", "make_passkey_case", "passkey_accuracy"],
    },
)  # fmt: skip
