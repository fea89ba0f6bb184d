"""Figures of the `inspect` report: the entropy histogram and the forking words."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tokensieve.inspect.signals import TokenSignals
from tokensieve.report.plots import FLOOR, plt, png_bytes
from tokensieve.scoring import display_piece, forking_tokens


def entropy_histogram(signals: TokenSignals, rho: float = 0.2) -> bytes:
    """Histogram of token entropy on a log axis, the (1 - rho) percentile marked.

    A log axis shows the paper's picture: a large mass of near-certain tokens and a
    high-entropy tail that holds the forks.
    """
    entropy = signals["entropy"][~np.isnan(signals["entropy"])]
    clipped = np.clip(entropy, FLOOR, None)
    top = max(float(clipped.max()) if clipped.size else 1.0, FLOOR * 10)
    bins = np.logspace(np.log10(FLOOR), np.log10(top * 1.05), 40)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(clipped, bins=bins, color="#4c72b0", edgecolor="white", linewidth=0.4)
    ax.set_xscale("log")
    if entropy.size:
        threshold = float(np.percentile(entropy, 100 * (1 - rho)))
        ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1.5)
        ax.text(
            threshold,
            ax.get_ylim()[1] * 0.95,
            f"{100 * (1 - rho):.0f}th percentile = {threshold:.2f} nats ",
            color="#c44e52",
            va="top",
            ha="right",
            fontsize=9,
        )
    ax.set_xlabel(
        f"entropy of the next-token distribution (nats, log axis; < {FLOOR:g} in first bin)"
    )
    ax.set_ylabel("tokens")
    ax.set_title(f"{signals.model}: token entropy ({len(signals)} tokens)")
    return png_bytes(fig)


def forking_word_bars(signals: TokenSignals, rho: float = 0.2, top: int = 15) -> bytes:
    """Most frequent token strings among forking vs remaining tokens, side by side."""
    forking = signals.forking if signals.forking is not None else forking_tokens(signals, rho)
    defined = ~np.isnan(signals["entropy"])

    def counts(mask: np.ndarray) -> list[tuple[str, int]]:
        words = Counter(display_piece(signals.pieces[i]) for i in np.flatnonzero(mask))
        return words.most_common(top)

    fig, axes = plt.subplots(1, 2, figsize=(9, 0.28 * top + 1.4))
    panels = [
        (axes[0], counts(forking), f"high entropy (top {rho:.0%})", "#c44e52"),
        (axes[1], counts(defined & ~forking), f"low entropy (bottom {1 - rho:.0%})", "#4c72b0"),
    ]
    for ax, items, title, colour in panels:
        labels = [word[:18] for word, _ in items][::-1]
        ax.barh(range(len(items)), [c for _, c in items][::-1], color=colour)
        ax.set_yticks(range(len(items)), labels, fontsize=9)
        ax.set_title(title)
        ax.set_xlabel("count")
    fig.suptitle(f"{signals.model}: most frequent token strings", fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)
