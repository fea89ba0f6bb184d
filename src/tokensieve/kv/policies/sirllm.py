"""SirLLM (Yao, Li, Zhao 2024): keep the tokens the model found surprising, with decay.

As the paper defines it: a token's importance is its self-information
``e_i = -log p(x_i | x_<i)`` from the LM head (one value per token, shared by every layer
and head), and after each eviction all stored values are multiplied by `decay`, so old
tokens fade while new ones enter undecayed. The first token of an input is scored from
the last logits of the input before it (the paper's −log p); the stream's very first
token, which has no predecessor, gets the maximum of its input's values. That maximum
rule is the authors' code's (``_cal_selfinfo``), where it applies to the first token of
*every* input, since the code scores each input alone. Kept: `sink` first tokens ∪ the
most important ones (``recent`` most recent tokens too, 0 in the paper's configurations).

When (`timing`): SirLLM selects once per new input (turn), not per generated token.
- ``"before input"`` (the default, as the authors run it: ``evict_for_space_token_entropy``
  in ``sir_llm/kv_cache.py``, called before each input in ``sir_llm/eval_utils.py``): before
  an input of n tokens is read, the cache is cut to ``budget - n - reserve`` slots, so the
  input is protected (it never competes in its own turn) and there is room for `reserve`
  generated tokens; every stored value decays once per input. The cache never holds more
  than the budget: a generated token past the reserve evicts one slot before it enters
  (the authors size the reserve so this never happens), and generated tokens compete at
  the next input like any other. An input longer than the room enters whole; readers that
  must stay within the budget read long inputs in chunks (`kv generate` and `kv stream`
  do).
- ``"after input"``: read the input, then evict to the budget, so the input competes at
  once and the answer generated afterwards is kept until the next input.

Where the authors' code departs from the paper, tokensieve follows the paper: the
reference (``sir_llm/eval_utils.py`` ``_cal_selfinfo`` at 4c95578) looks the current
token's id up in the *next*-token distribution, so token i stores
``-log p(next = x_{i-1} | x_≤i-1)``, the right distribution with the id one token off.

Positions: the authors keep keys at their rank in the cache (StreamingLLM's pos-shift);
`kv generate`, `kv eval` and the benchmark keep every key at its position in the text
(``CompressedCache(pos_shift=False)``, the library's default for every policy), which is
what the evaluations here compare; `kv stream` re-rotates to ranks (``--pos-shift``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokensieve.errors import UserError
from tokensieve.kv.policy import KVPolicy


@dataclass
class SirLLMState:
    """The last logits read: they score the first token of the next input."""

    last_logits: torch.Tensor | None = None


TIMINGS = ("before input", "after input")


@dataclass
class SirLLMPolicy(KVPolicy):
    sink: int = 4
    decay: float = 0.9
    timing: str = "before input"
    reserve: int = 64  # room kept for generated tokens when evicting before an input
    name = "sirllm"
    reads = "logits"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timing not in TIMINGS:
            raise UserError(f"SirLLM's timing is one of {', '.join(TIMINGS)}, got {self.timing!r}")
        if self.reserve < 0:
            raise UserError(f"SirLLM's reserve must not be negative, got {self.reserve}")

    @property
    def compresses(self) -> str:
        return "before input" if self.timing == "before input" else "per input"

    def new_state(self) -> SirLLMState:
        return SirLLMState()

    def token_scores(self, state: SirLLMState, input_ids, logits):
        new = input_ids.shape[1]
        surprisal = torch.empty(input_ids.shape, dtype=torch.float32, device=logits.device)
        # In chunks of positions: a float32 log-softmax of a whole 8k-token input would
        # be another [8k, vocab] tensor (1.6 GB for SmolLM2) beside the logits.
        for start in range(0, new - 1, 512):
            stop = min(start + 512, new - 1)
            logp = torch.log_softmax(logits[:, start:stop].float(), dim=-1)
            targets = input_ids[:, start + 1 : stop + 1, None]
            surprisal[:, start + 1 : stop + 1] = -logp.gather(2, targets)[..., 0]
        if state.last_logits is not None:
            previous = torch.log_softmax(state.last_logits.float(), dim=-1)
            surprisal[:, 0] = -previous.gather(1, input_ids[:, :1])[:, 0]
        else:  # the very first token: the maximum of the list (reference code)
            surprisal[:, 0] = surprisal[:, 1:].amax(dim=1) if new > 1 else 0.0  # per row
        state.last_logits = logits[:, -1].detach()
        return surprisal

    def score(self, scores, seen):
        # At each input every stored value fades. The reference selects, then multiplies
        # the survivors by `decay`; multiplying first keeps the same ranking and values.
        return scores * self.decay
