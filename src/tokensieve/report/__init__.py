"""Reports for people: the self-contained HTML heatmap and matplotlib plots."""

from tokensieve.lazy import lazy_exports

__all__ = [
    "entropy_histogram",
    "forking_word_bars",
    "kept_heatmap",
    "render_html",
    "write_inspect_report",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.report.html": ["render_html"],
        "tokensieve.report.plots": ["entropy_histogram", "forking_word_bars", "kept_heatmap"],
        "tokensieve.report.writer": ["write_inspect_report"],
    },
)
