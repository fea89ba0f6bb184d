"""Figures for `tokensieve rl compare` and the RL benchmark (PNG bytes, as in `report`).

Runs are named; names of the form ``<arm>-seed<k>`` share a colour per arm, so seeds
of one arm read as one family of lines.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from tokensieve.report.plots import FLOOR, png_bytes
from tokensieve.rl.analysis import ForkingAnalysis

COLOURS = ["#4c72b0", "#c44e52", "#55a868", "#8172b2", "#ccb974", "#64b5cd", "#937860"]
STYLES = ["-", "--", ":", "-."]


def _arm(name: str) -> tuple[str, int]:
    arm, _, seed = name.rpartition("-seed")
    return (arm, int(seed)) if arm and seed.isdigit() else (name, 0)


def _styles(names: list[str]) -> dict[str, dict]:
    arms = list(dict.fromkeys(_arm(n)[0] for n in names))
    return {
        n: {
            "color": COLOURS[arms.index(_arm(n)[0]) % len(COLOURS)],
            "linestyle": STYLES[_arm(n)[1] % len(STYLES)],
        }
        for n in names
    }


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = sorted((r["step"], r[key]) for r in rows if key in r)
    return [s for s, _ in points], [v for _, v in points]


def curves(runs: dict[str, list[dict]]) -> bytes:
    """Test accuracy, train reward, mean entropy and share trained on, against step."""
    panels = [
        ("test_accuracy", "test accuracy"),
        ("reward", "train reward"),
        ("entropy", "mean token entropy (nats)"),
        ("tokensieve/selected_fraction", "share of tokens trained on"),
    ]
    styles = _styles(list(runs))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, rows in runs.items():
            steps, values = _series(rows, key)
            if steps:
                marker = "o" if key == "test_accuracy" else None
                ax.plot(steps, values, label=name, marker=marker, linewidth=1.3, **styles[name])
        ax.set_title(title)
        ax.set_xlabel("step")
    # the legend on the first panel that has lines (runs without test accuracy: no dots)
    drawn = [ax for ax in axes if ax.lines]
    if drawn:
        drawn[0].legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


def entropy_histograms(analysis: ForkingAnalysis) -> bytes:
    """Token entropy of the same responses under each model (log axis), base filled."""
    values = [np.clip(e, FLOOR, None) for e in analysis.entropy.values()]
    top = max((float(v.max()) for v in values if v.size), default=1.0)
    bins = np.logspace(np.log10(FLOOR), np.log10(max(top, FLOOR * 10) * 1.05), 40)
    styles = _styles([n for n in analysis.entropy if n != "base"])
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, clipped in zip(analysis.entropy, values, strict=True):
        if name == "base":
            ax.hist(clipped, bins=bins, color="#bbbbbb", label="base")
        else:
            ax.hist(clipped, bins=bins, histtype="step", linewidth=1.3, label=name,
                    color=styles[name]["color"], linestyle=styles[name]["linestyle"])  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(f"entropy (nats, log axis; < {FLOOR:g} in first bin)")
    ax.set_ylabel("tokens")
    ax.set_title(f"entropy of the base model's answers ({len(analysis.pieces)} tokens)")
    ax.legend(fontsize=7)
    return png_bytes(fig)


def forks(analysis: ForkingAnalysis, top: int = 15) -> bytes:
    """Left: the base model's most frequent forking tokens. Right: the share of the
    base model's forking positions each trained model keeps (the overlap analysis)."""
    items = analysis.frequent_forks("base", top)
    trained = [n for n in analysis.entropy if n != "base"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.28 * top + 1.6))
    axes[0].barh(range(len(items)), [c for _, c in items][::-1], color="#c44e52")
    axes[0].set_yticks(range(len(items)), [w[:18] for w, _ in items][::-1], fontsize=9)
    axes[0].set_title(f"base model: most frequent forking tokens (top {analysis.rho:.0%})")
    axes[0].set_xlabel("count")
    styles = _styles(trained)
    overlaps = [analysis.overlap(n) for n in trained]
    axes[1].barh(range(len(trained)), overlaps[::-1],
                 color=[styles[n]["color"] for n in trained][::-1])  # fmt: skip
    axes[1].set_yticks(range(len(trained)), trained[::-1], fontsize=9)
    axes[1].set_xlim(0, 1)
    axes[1].set_xlabel("share of the base model's forking positions still forking")
    axes[1].set_title("overlap with the base model")
    fig.tight_layout()
    return png_bytes(fig)
