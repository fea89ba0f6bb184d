"""Reports for people: the self-contained HTML heatmap and matplotlib plots."""

from tokensieve.report.html import render_html
from tokensieve.report.plots import entropy_histogram, forking_word_bars, kept_heatmap
from tokensieve.report.writer import write_inspect_report

__all__ = [
    "entropy_histogram",
    "forking_word_bars",
    "kept_heatmap",
    "render_html",
    "write_inspect_report",
]
