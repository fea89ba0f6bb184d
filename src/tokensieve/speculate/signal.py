"""``speculated`` for `inspect`: which tokens a drafter had for free.

The analysed tokens are replayed through speculative decoding (`follow` mode): each step
drafts a tree after the tokens so far, one forward verifies it, and the drafts that match
the text are accepted. A token's value is how many tokens the forward that gave it
committed: 1 = it needed a forward of its own; 3 = it came with two others. For the
model's own greedy answer this is exactly what `tokensieve speculate` does; for any other
text it says where the drafter could have guessed the text.
"""

from __future__ import annotations

import numpy as np

from tokensieve.models import model_display_name
from tokensieve.report.plots import plt, png_bytes
from tokensieve.speculate import DEFAULT_TREE, DRAFTERS
from tokensieve.speculate.decode import speculative_generate


class SpeculationSignal:
    name = "speculated"
    unit = "tokens committed by the forward that gave the token (1 = a forward of its own)"

    def __init__(self, method: str = "recycling", tree_size: int | None = None):
        self.method = method
        size = DEFAULT_TREE.get(method, 16) if tree_size is None else tree_size
        self.drafter = DRAFTERS.build(method, tree_size=size)  # checked before loading

    def __call__(self, model, context_ids: list[int], token_ids: list[int]):
        context, tokens = list(context_ids), list(token_ids)
        if not context:  # the first token has no prediction: it is read, not decoded
            context, tokens = tokens[:1], tokens[1:]
        values = [1.0] * (len(token_ids) - len(tokens))
        if tokens:
            result = speculative_generate(model, context, self.drafter, len(tokens),
                                          follow=tokens)  # fmt: skip
            values += [float(v) for v in result.committed_per_token()]
            plots = {"speculated.png": self._plot(model, result)}
        else:
            plots = {}
        return np.array(values), plots

    def _plot(self, model, result) -> bytes:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        steps = np.arange(len(result.committed))
        ax.bar(steps, result.committed, width=1.0, color="#4c72b0")
        ax.axhline(result.accepted_per_forward, color="#c44e52", lw=1,
                   label=f"mean {result.accepted_per_forward:.2f} tokens per forward")  # fmt: skip
        ax.set_xlabel("forward (verification step)")
        ax.set_ylabel("tokens committed")
        ax.set_title(f"{self.method}, {self.drafter.max_nodes} draft nodes "
                     f"({model_display_name(model)})")  # fmt: skip
        ax.legend(loc="upper right")
        return png_bytes(fig)
