"""Write everything `tokensieve inspect` produces into one fresh directory."""

from __future__ import annotations

from pathlib import Path

from tokensieve.outputs import fresh_directory, write_atomic
from tokensieve.report.html import render_html
from tokensieve.report.plots import entropy_histogram, forking_word_bars
from tokensieve.signals import TokenSignals, summarize


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
    earlier report is never overwritten. Returns ``(directory, summary)``.
    """
    if signals.forking is None:
        signals = signals.with_forking(rho)
    summary = summarize(signals, rho)
    plots = {
        "entropy-histogram.png": entropy_histogram(signals, rho),
        "forking-tokens.png": forking_word_bars(signals, rho),
        **(extra_plots or {}),
    }
    directory = fresh_directory(out)
    for name, png in plots.items():
        write_atomic(directory / name, png)
    write_atomic(directory / "signals.json", signals.to_json())
    write_atomic(directory / "signals.csv", signals.to_csv())
    page = render_html(signals, signal=signal, rho=rho, summary=summary, plots=plots)
    write_atomic(directory / "report.html", page)
    return directory, summary
