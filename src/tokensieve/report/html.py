"""One self-contained HTML page: tokens coloured by a signal, forks outlined.

Everything (data, CSS, script, plots) is inline, so the file can be mailed or opened
offline. Colours are by percentile rank within the text, which works for every
signal whatever its scale (entropy in nats, attention weights near zero).
"""

from __future__ import annotations

import base64
import html
import json

from tokensieve.signals import SIGNALS, UNITS, TokenSignals

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>tokensieve inspect: __TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: .2em; }
.sub { color: #666; margin-top: 0; }
.bar { display: flex; gap: 1.5em; align-items: center; flex-wrap: wrap;
       background: #f4f4f6; padding: .6em 1em; border-radius: 6px; }
.summary { display: flex; gap: 1.8em; flex-wrap: wrap; margin: .8em 0; }
.summary div b { display: block; font-size: 1.25em; }
.legend { display: inline-flex; align-items: center; gap: .4em; font-size: .85em; }
.ramp { width: 10em; height: .8em; border-radius: 3px;
        background: linear-gradient(to right, rgb(255,255,255), rgb(253,174,97), rgb(215,25,28)); }
#text { font-family: ui-monospace, monospace; font-size: 14px; line-height: 1.9;
        white-space: pre-wrap; word-break: break-word; border: 1px solid #ddd;
        border-radius: 6px; padding: 1em; margin-top: 1em; }
#text span.t { border-radius: 2px; padding: 1px 0; cursor: default; }
#text span.fork { outline: 2px solid #2b59c3; outline-offset: -1px; }
#text.noforks span.fork { outline: none; }
#text span.t:hover { outline: 2px solid #000; }
.prompt { background: #f9f9fb; border-left: 3px solid #aaa; padding: .4em .8em; white-space: pre-wrap; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; font-size: 12px;
       padding: .5em .7em; border-radius: 4px; display: none; z-index: 10; white-space: pre; }
.plots img { max-width: 49%; vertical-align: top; }
</style></head><body>
<h1>tokensieve inspect</h1>
<p class="sub">__SUBTITLE__</p>
__PROMPT__
<div class="summary">__SUMMARY__</div>
<div class="bar">
  <label>colour by <select id="signal">__OPTIONS__</select></label>
  <label><input type="checkbox" id="forks" checked> outline forking tokens (top __RHO__ entropy)</label>
  <span class="legend"><span id="lo"></span><span class="ramp"></span><span id="hi"></span></span>
</div>
<div id="text"></div>
<div class="plots">__PLOTS__</div>
<div id="tip"></div>
<script type="application/json" id="data">__DATA__</script>
<script>
const data = JSON.parse(document.getElementById("data").textContent);
const text = document.getElementById("text"), tip = document.getElementById("tip");
const units = data.units;
function fmt(v) { return v === null ? "n/a" : (Math.abs(v) >= 0.01 || v === 0 ? v.toFixed(3) : v.toExponential(2)); }
function colour(r) {
  const stops = [[255,255,255],[253,174,97],[215,25,28]];
  const x = r * 2, i = Math.min(1, Math.floor(x)), f = x - i;
  const c = stops[i].map((s, k) => Math.round(s + (stops[i + 1][k] - s) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
const spans = data.tokens.map(tok => {
  const s = document.createElement("span");
  s.className = "t" + (tok.forking ? " fork" : "");
  s.textContent = tok.piece;
  s.addEventListener("mousemove", e => {
    const lines = [`#${tok.index}  ${JSON.stringify(tok.piece)}  id ${tok.token_id}`,
                   `bytes ${tok.byte_start}-${tok.byte_end}${tok.forking ? "  FORKING" : ""}`];
    for (const name of data.signals) lines.push(`${name.padEnd(19)} ${fmt(tok[name])} ${units[name] || ""}`);
    tip.textContent = lines.join("\\n"); tip.style.display = "block";
    tip.style.left = Math.min(e.clientX + 14, window.innerWidth - 320) + "px";
    tip.style.top = (e.clientY + 14) + "px";
  });
  s.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  text.appendChild(s);
  return s;
});
function paint(name) {
  const vals = data.tokens.map(t => t[name]);
  const sorted = vals.filter(v => v !== null).sort((a, b) => a - b);
  const rank = v => { let lo = 0, hi = sorted.length; while (lo < hi) { const m = (lo + hi) >> 1; if (sorted[m] < v) lo = m + 1; else hi = m; } return sorted.length > 1 ? lo / (sorted.length - 1) : 0; };
  spans.forEach((s, i) => { s.style.background = vals[i] === null ? "#eee" : colour(Math.min(1, rank(vals[i]))); });
  document.getElementById("lo").textContent = sorted.length ? fmt(sorted[0]) : "";
  document.getElementById("hi").textContent = sorted.length ? fmt(sorted[sorted.length - 1]) + " " + (units[name] || "") : "";
}
const select = document.getElementById("signal");
select.addEventListener("change", () => paint(select.value));
document.getElementById("forks").addEventListener("change", e => text.classList.toggle("noforks", !e.target.checked));
paint(select.value);
</script></body></html>
"""


def render_html(
    signals: TokenSignals,
    *,
    signal: str = "entropy",
    rho: float = 0.2,
    summary: dict | None = None,
    plots: dict[str, bytes] | None = None,
) -> str:
    """The report page; `signal` is the one selected when the page opens."""
    available = [name for name in SIGNALS if name in signals.values]
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
    data = json.dumps(signals.to_dict(), ensure_ascii=False).replace("</", "<\\/")
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
    page = _PAGE
    for key, value in replacements.items():
        page = page.replace(key, value)
    return page
