"""Reports for people: the self-contained HTML heatmap and matplotlib plots."""

from tokensieve.report.html import render_html
from tokensieve.report.plots import entropy_histogram, forking_word_bars
from tokensieve.report.writer import write_inspect_report

__all__ = ["render_html", "entropy_histogram", "forking_word_bars", "write_inspect_report"]
