"""The overlap analysis: forking positions of the same tokens under two models."""

from __future__ import annotations

import numpy as np
import torch

from tokensieve.rl import plots
from tokensieve.rl.analysis import ForkingAnalysis, analyse
from tokensieve.rl.rollouts import complete
from tokensieve.rl.tasks import get_task


def test_overlap_counts_the_base_forks_kept():
    base = np.array([5.0, 0.1, 4.0, 0.2, 0.3, 3.0, 0.1, 0.0, 0.2, 0.1])
    trained = np.array([0.1, 0.1, 4.0, 5.0, 0.3, 3.0, 0.1, 0.0, 0.2, 0.1])
    result = ForkingAnalysis(list("abcdefghij"), {"base": base, "run": trained}, rho=0.2)
    # top 20% of 10 tokens = 2: base {a, c}, trained {c, d}
    assert result.forks["base"].nonzero()[0].tolist() == [0, 2]
    assert result.forks["run"].nonzero()[0].tolist() == [2, 3]
    assert result.overlap("run") == 0.5 and result.overlap("base") == 1.0
    assert result.frequent_forks("base") == [("a", 1), ("c", 1)]
    summary = result.summary()
    assert summary["run"]["overlap_with_base"] == 0.5


def test_analyse_scores_the_same_tokens_under_every_model(tiny):
    model, tokenizer = tiny
    other = type(model)(model.config)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.lm_head.weight.mul_(3.0)  # sharper distributions: lower entropy everywhere
    result = analyse({"base": model, "same": model, "sharper": other}, tokenizer, "arithmetic",
                     problems=3, max_new_tokens=6)  # fmt: skip
    n = len(result.pieces)
    assert n > 0 and all(len(e) == n for e in result.entropy.values())
    assert result.overlap("same") == 1.0
    # the first answer's entropies from the definition: the base model's greedy answer,
    # teacher-forced, -Σ p log p of the full next-token distribution at temperature 1
    problem = get_task("arithmetic").problem("test", 0)
    prompt, answer = complete(model, tokenizer, [problem], 6, temperature=0)[0]
    assert answer, "an empty first answer: nothing to check"
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0].double()
    expected = []
    for t in range(len(prompt) - 1, len(prompt) + len(answer) - 1):
        p = torch.softmax(logits[t], -1)
        expected.append(float(-(p * torch.log(p.clamp_min(1e-300))).sum()))
    assert np.allclose(result.entropy["base"][: len(answer)], expected, atol=1e-4)
    assert 0.0 <= result.overlap("sharper") <= 1.0
    assert result.entropy["sharper"].mean() < result.entropy["base"].mean()
    for png in (plots.entropy_histograms(result), plots.forks(result)):
        assert png[:4] == b"\x89PNG"
    runs = {"top-seed0": [{"step": 0, "test_accuracy": 0.5}, {"step": 1, "reward": 0.2}]}
    assert plots.curves(runs)[:4] == b"\x89PNG"
