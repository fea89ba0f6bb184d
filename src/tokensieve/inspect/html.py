"""One self-contained HTML page: tokens coloured by a signal, forks outlined.

Everything (data, CSS, script, plots) is inline, so the file can be mailed or opened
offline. Colours are by percentile rank within the text, which works for every
signal whatever its scale (entropy in nats, attention weights near zero).
"""

from __future__ import annotations

import base64
import html
from importlib import resources

from tokensieve.inspect.signals import TokenSignals
from tokensieve.report.page import fill_placeholders, script_json

_PAGE = (resources.files("tokensieve.inspect") / "template.html").read_text(encoding="utf-8")


def render_html(
    signals: TokenSignals,
    *,
    signal: str = "entropy",
    rho: float = 0.2,
    summary: dict | None = None,
    plots: dict[str, bytes] | None = None,
) -> str:
    """The report page; `signal` is the one selected when the page opens."""
    available = list(signals.values)
    options = "".join(
        f'<option value="{name}"{" selected" if name == signal else ""}>{name}</option>'
        for name in available
    )
    cards = ""
    if summary:
        shown = {
            "tokens": f"{summary['tokens']}",
            "mean entropy": f"{summary['mean_entropy']:.3f} nats",
            "entropy < 0.01": f"{summary['fraction_below_0.01']:.1%}",
            f"{100 * (1 - rho):.0f}th pct entropy": f"{summary['entropy_p80']:.3f} nats",
            "forking tokens": f"{summary['forking_count']}",
        }
        cards = "".join(
            f"<div><b>{html.escape(v)}</b>{html.escape(k)}</div>" for k, v in shown.items()
        )
    images = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}">'
        for name, png in (plots or {}).items()
    )
    prompt = (
        f'<div class="prompt"><b>prompt</b>\n{html.escape(signals.prompt)}</div>'
        if signals.prompt
        else ""
    )
    data = script_json(signals.to_dict())
    mode = "the model's answer" if signals.meta.get("mode") == "answer" else "a text"
    replacements = {
        "__TITLE__": html.escape(signals.model),
        "__SUBTITLE__": html.escape(
            f"{len(signals)} tokens of {mode}, read by {signals.model}. Hover a token for "
            "every signal; colour is the percentile within this text."
        ),
        "__PROMPT__": prompt,
        "__SUMMARY__": cards,
        "__OPTIONS__": options,
        "__RHO__": f"{rho:.0%}",
        "__PLOTS__": images,
        "__DATA__": data,
    }
    return fill_placeholders(_PAGE, replacements)
