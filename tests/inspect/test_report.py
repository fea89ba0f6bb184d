"""The HTML report is self-contained and carries every signal of every token."""

from __future__ import annotations

import json
import re

from tokensieve import text_signals
from tokensieve.inspect.html import render_html
from tokensieve.inspect.report import write_inspect_report
from tokensieve.signal_names import SIGNALS

TEXT = "Use </script> safely: a <b>tag</b> & an ampersand.\nSecond line."


def test_html_embeds_data_and_nothing_external(tiny, tmp_path):
    model, tokenizer = tiny
    signals = text_signals(model, tokenizer, TEXT).with_forking(0.2)
    directory, summary = write_inspect_report(signals, tmp_path / "r", rho=0.2)
    page = (directory / "report.html").read_text()
    assert not re.search(r"(src|href)=\"https?://", page)
    assert page.count("data:image/png;base64,") == 2
    payload = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    data = json.loads(payload.group(1))
    assert data["text"] == TEXT
    assert len(data["tokens"]) == len(signals)
    assert data["signals"] == list(SIGNALS)
    assert sum(t["forking"] for t in data["tokens"]) == summary["forking_count"]
    for name in SIGNALS:
        assert f'<option value="{name}"' in page


def test_initial_signal_is_selected(tiny):
    model, tokenizer = tiny
    signals = text_signals(model, tokenizer, "abc def ghi").with_forking(0.5)
    page = render_html(signals, signal="surprisal", rho=0.5)
    assert '<option value="surprisal" selected>' in page
    assert "top 50% entropy" in page
