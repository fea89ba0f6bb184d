"""Where one capability serves another without importing it.

`inspect` can colour its report by a signal that another capability computes (which
tokens a KV policy keeps, which tokens a drafter had for free); `generate` can sample
over another capability's view of the model (bytes instead of tokens). The provider adds
itself to a registry here when its command line module loads (`tokensieve.cli` loads
every capability before parsing); the consumer finds it by name. Neither imports the
other, and a new provider needs no change to the consumer.
"""

from __future__ import annotations

from typing import Protocol

from tokensieve.registry import Registry


class ExtraSignal(Protocol):
    """One more per-token signal for a report: values for the analysed tokens, and plots.

    `context_ids` is what the model read before the analysed tokens (BOS, a prompt);
    `token_ids` are the analysed tokens. Returns ``(values, {filename: png_bytes})``
    with one value per analysed token."""

    name: str
    unit: str

    def __call__(self, model, context_ids: list[int], token_ids: list[int]): ...


EXTRA_SIGNALS = Registry("extra signal", {})

# Views of a model that `generate`'s samplers can draw from in place of its tokens: built
# as ``view(model, tokenizer, prompt_ids)``, with the interface of
# `tokensieve.generate.language_model.TokenLM` (start, step, select, token_bytes, eos_ids,
# forbidden, vocab_size). `bytes` registers "bytes".
LANGUAGE_MODEL_VIEWS = Registry("language model view", {})


class LiveChoices:
    """argparse choices read when used (after every capability has registered)."""

    def __init__(self, *names: str, registry: Registry):
        self.names, self.registry = names, registry

    def _all(self) -> tuple[str, ...]:
        return (*self.names, *self.registry)

    def __contains__(self, value) -> bool:
        return value in self._all()

    def __iter__(self):
        return iter(self._all())
