"""The report toolkit for every capability: headless matplotlib figures as PNG bytes, and
HTML pages whose embedded data no text can break. Knows nothing of any capability."""

from tokensieve.lazy import lazy_exports

__all__ = ["FLOOR", "fill_placeholders", "heatmap", "png_bytes", "script_json"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.report.page": ["fill_placeholders", "script_json"],
        "tokensieve.report.plots": ["FLOOR", "heatmap", "png_bytes"],
    },
)
