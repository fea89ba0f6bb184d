"""Continuing a byte prefix, one byte at a time: sampled or greedy, whole characters.

Any byte-level model with ``state(prefix)`` / ``next_logprobs()`` / ``advance(byte)``
serves (`ByteLM`, `ByteEnsemble`). A text sampled byte by byte could stop inside a
multi-byte UTF-8 character or wander into bytes no UTF-8 text has; by default the next
byte is restricted to what keeps the text well-formed UTF-8 (a lead byte may only be
followed by its continuation bytes; the end only comes between characters) and a
continuation asked for `n` bytes runs on to the end of its last character.
`whole_characters=False` lifts both rules. Overlong forms and surrogates (rarer
ill-formed UTF-8) are not excluded.
"""

from __future__ import annotations

import math

import numpy as np

from tokensieve.errors import UserError

CONTINUATION = np.zeros(257, dtype=bool)
CONTINUATION[0x80:0xC0] = True
STARTS = np.zeros(257, dtype=bool)
STARTS[0x00:0x80] = True
STARTS[0xC2:0xF5] = True


def pending_continuations(data: bytes) -> int:
    """How many continuation bytes the last, unfinished character of `data` still needs
    (0 if it ends between characters, or where its tail is not UTF-8 at all)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead
        return max(_character_length(byte) - back, 0)
    return 0


def _character_length(lead: int) -> int:
    """Bytes in a character starting with `lead` (1 for ASCII or a stray byte)."""
    for mask, value, length in ((0xE0, 0xC0, 2), (0xF0, 0xE0, 3), (0xF8, 0xF0, 4)):
        if lead & mask == value:
            return length
    return 1


def allowed_next(data: bytes) -> np.ndarray:
    """``[257]`` bool: the bytes (and the end, index 256) that keep `data` UTF-8."""
    if pending_continuations(data):
        return CONTINUATION
    allowed = STARTS.copy()
    allowed[256] = True
    return allowed


def continue_bytes(
    model,
    prefix: bytes,
    max_bytes: int,
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    whole_characters: bool = True,
    progress=None,
) -> tuple[bytes, bool]:
    """Up to `max_bytes` bytes after `prefix` (more to finish a character); returns
    ``(bytes, ended)``, `ended` True when the model chose to end."""
    if max_bytes < 1:
        raise UserError(f"`max_bytes` must be at least 1, got {max_bytes}")
    if not greedy and not (math.isfinite(temperature) and temperature > 0):
        raise UserError(f"`temperature` must be above 0 (or sample greedily), got {temperature}")
    rng = np.random.default_rng(seed)
    state, out = model.state(prefix), b""
    while True:
        text = prefix + out
        if len(out) >= max_bytes and not (whole_characters and pending_continuations(text)):
            return out, False
        logs = state.next_logprobs()
        if whole_characters:
            logs = np.where(allowed_next(text), logs, -np.inf)
        if not np.isfinite(logs).any():
            return out, True  # nothing the model can say here
        if greedy:
            choice = int(np.argmax(logs))
        else:
            # shift before scaling: the best byte stays at 0 however small the temperature
            weights = np.exp((logs - logs[np.isfinite(logs)].max()) / temperature)
            choice = int(rng.choice(257, p=weights / weights.sum()))
        if choice == 256:
            return out, True
        out += bytes([choice])
        state = state.advance(choice)
        if progress is not None:
            progress.update(1)
