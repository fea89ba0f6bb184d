"""Write everything `tokensieve inspect` produces into one fresh directory."""

from __future__ import annotations

from pathlib import Path

from tokensieve.inspect.html import render_html
from tokensieve.inspect.plots import entropy_histogram, forking_word_bars
from tokensieve.inspect.signals import TokenSignals, summarize
from tokensieve.outputs import write_directory


def write_inspect_report(
    signals: TokenSignals,
    out: str | Path,
    *,
    rho: float = 0.2,
    signal: str = "entropy",
    extra_plots: dict[str, bytes] | None = None,
) -> tuple[Path, dict]:
    """Write report.html, signals.json, signals.csv and PNG plots into a new directory.

    `out` is used when missing or empty, otherwise a fresh ``out-N`` sibling, so an
    earlier report is never overwritten; the files appear together (staged, renamed).
    Returns ``(directory, summary)``.
    """
    if signals.forking is None:
        signals = signals.with_forking(rho)
    summary = summarize(signals, rho)
    plots = {
        "entropy-histogram.png": entropy_histogram(signals, rho),
        "forking-tokens.png": forking_word_bars(signals, rho),
        **(extra_plots or {}),
    }
    page = render_html(signals, signal=signal, rho=rho, summary=summary, plots=plots)
    files = {**plots, "signals.json": signals.to_json(), "signals.csv": signals.to_csv(),
             "report.html": page}  # fmt: skip
    return write_directory(out, files), summary
