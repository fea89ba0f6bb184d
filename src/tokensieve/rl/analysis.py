"""What RL did to the forking tokens: the paper's overlap analysis and its pictures.

"Beyond the 80/20 Rule" (section 4) fixes a set of responses, scores every token's
entropy under the base model and under trained checkpoints (teacher-forced, temperature
1, full vocabulary), and asks how many of the base model's top-20% positions are still
top-20% after training: RLVR mostly keeps the base model's forks and adjusts their
entropy. Here the responses are the base model's greedy answers to a task's test
problems, so every model is scored on the same tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tokensieve.lm import token_bytes
from tokensieve.rl.rollouts import complete
from tokensieve.rl.tasks import get_task
from tokensieve.scoring import display_piece, forking_tokens, score_sequence


@dataclass
class ForkingAnalysis:
    """Entropies of the same response tokens under each model, and what follows."""

    pieces: list[str]  # the response tokens, as displayed
    entropy: dict[str, np.ndarray]  # model name → entropy per token (nats)
    rho: float = 0.2
    forks: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self):
        self.forks = {name: forking_tokens(e, self.rho) for name, e in self.entropy.items()}

    def overlap(self, name: str, reference: str = "base") -> float:
        """Share of `reference`'s forking positions that are forking positions of `name`."""
        ref = self.forks[reference]
        return float((ref & self.forks[name]).sum() / max(int(ref.sum()), 1))

    def frequent_forks(self, name: str = "base", top: int = 15) -> list[tuple[str, int]]:
        counts = Counter(p for p, f in zip(self.pieces, self.forks[name], strict=True) if f)
        return counts.most_common(top)

    def summary(self) -> dict:
        return {
            name: {
                "mean_entropy": float(np.mean(e)),
                "overlap_with_base": self.overlap(name) if "base" in self.entropy else None,
                "frequent_forks": self.frequent_forks(name, 10),
            }
            for name, e in self.entropy.items()
        }


def analyse(
    models: dict,
    tokenizer,
    task_name: str,
    *,
    problems: int = 32,
    max_new_tokens: int = 96,
    rho: float = 0.2,
    progress: bool = False,
) -> ForkingAnalysis:
    """Score the first model's (by convention "base") greedy test answers under every
    model in `models` (name → model, all with `tokenizer`'s vocabulary)."""
    import torch

    task = get_task(task_name)
    items = [task.problem("test", i) for i in range(problems)]
    first = next(iter(models.values()))
    pairs = [(p, c) for p, c in complete(first, tokenizer, items, max_new_tokens, temperature=0)
             if c]  # fmt: skip
    pieces = [
        display_piece(b.decode("utf-8", "replace"))
        for _, c in pairs
        for b in token_bytes(tokenizer, c)
    ]
    entropy = {}
    for name, model in models.items():
        model.eval()
        per_answer = [
            score_sequence(model, torch.tensor(p + c), len(p), attention=False)["entropy"]
            for p, c in pairs
        ]
        entropy[name] = np.concatenate(per_answer) if per_answer else np.zeros(0)
    return ForkingAnalysis(pieces, entropy, rho)
