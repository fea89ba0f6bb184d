"""`tokensieve inspect`: per-token signals of a text or of the model's answer, as a report.

`signals` turns a text or an answer into `TokenSignals` (scored by `tokensieve.scoring`),
`report` writes the HTML page, data files and plots, `cli` is the command.
"""

from tokensieve.lazy import lazy_exports

__all__ = [
    "TokenSignals",
    "answer_signals",
    "render_html",
    "summarize",
    "text_signals",
    "write_inspect_report",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tokensieve.inspect.html": ["render_html"],
        "tokensieve.inspect.report": ["write_inspect_report"],
        "tokensieve.inspect.signals": [
            "TokenSignals", "answer_signals", "summarize", "text_signals",
        ],
    },
)  # fmt: skip
