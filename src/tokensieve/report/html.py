"""One self-contained HTML page: tokens coloured by a signal, forks outlined.

Everything (data, CSS, script, plots) is inline, so the file can be mailed or opened
offline. Colours are by percentile rank within the text, which works for every
signal whatever its scale (entropy in nats, attention weights near zero).
"""

from __future__ import annotations

import base64
import html
import re
from importlib import resources

from tokensieve.outputs import json_text
from tokensieve.signals import TokenSignals

_PAGE = (resources.files("tokensieve.report") / "template.html").read_text(encoding="utf-8")


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
    # One pass: text put into one placeholder is never searched for the next one.
    return re.sub(r"__[A-Z]+__", lambda m: replacements.get(m.group(0), m.group(0)), _PAGE)


# Inside <script> an HTML parser looks only for "</script" and "<!--", but escaping every
# <, > and & (and the two line separators old JavaScript refused) is simplest to trust.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                   "\u2028": "\\u2028", "\u2029": "\\u2029"}  # fmt: skip


def script_json(value) -> str:
    """`value` as JSON that is safe inside a ``<script>`` element, whatever its strings hold."""
    text = json_text(value, indent=None)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group(0)], text)
