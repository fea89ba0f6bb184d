"""A report no text can break (issue case 4): hostile texts, HTML sources and non-finite
numbers, checked with an HTML parser and, where Debian's chromium is installed, in a
headless browser."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from tokensieve.inspect.html import render_html
from tokensieve.inspect.signals import text_signals
from tokensieve.outputs import json_text

HOSTILE = [
    "__DATA__ <img src=x onerror=alert(2)>",
    "<!--<script>",
    "</script><script>alert(1)</script>",
    "<!DOCTYPE html><html><body onload=alert(3)><p>&amp; &lt; __TITLE__ __PROMPT__</p>",
    "line\u2028separator\u2029and <![CDATA[ x ]]> done",
    '"\\u003c/script>" \' ` ${alert(4)}',
]


class Page(HTMLParser):
    """Start tags and the text of each script element, as a browser's tokenizer sees them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def hostile_page(tiny, text: str):
    model, tokenizer = tiny
    signals = text_signals(model, tokenizer, text, attention=False)
    signals = dataclasses.replace(signals, prompt=text, meta={**signals.meta, "odd": float("nan")})
    return signals, render_html(signals)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_stays_text(tiny, text):
    signals, page = hostile_page(tiny, text)
    parsed = Page()
    parsed.feed(page)
    tags = [tag for tag, _ in parsed.tags]
    assert tags.count("script") == 2 and "img" not in tags and tags.count("body") == 1
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    data, code = parsed.scripts
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data) == json.loads(json_text(signals.to_dict()))  # the whole data back
    assert json.loads(data)["text"] == text and json.loads(data)["meta"]["odd"] is None
    assert "JSON.parse" in code and text not in code


def test_non_finite_numbers_are_null():
    assert json.loads(json_text({"a": float("nan"), "b": [float("inf"), 1.5]})) == {
        "a": None,
        "b": [None, 1.5],
    }


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_page_shows_its_tokens_in_a_browser(tiny, tmp_path):
    text = " ".join(HOSTILE)
    signals, page = hostile_page(tiny, text)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    parsed = Page()
    parsed.feed(dom)
    spans = [attrs for tag, attrs in parsed.tags if tag == "span" and "t" in attrs.get("class", "")]
    assert len(spans) == len(signals)  # the script ran and drew every token
    tags = [tag for tag, _ in parsed.tags]
    assert "img" not in tags and tags.count("script") == 2
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)


def test_text_the_font_lacks_draws_without_warnings():
    """CJK text flooded stderr with one matplotlib warning per missing glyph."""
    import warnings

    import matplotlib.pyplot as plt

    from tokensieve.report.plots import png_bytes

    fig, ax = plt.subplots()
    ax.barh(["東京は日本の首都です", "한국어"], [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert png_bytes(fig)[:4] == b"\x89PNG"
