"""`tokensieve inspect` end to end on a tiny model directory, and its answers to bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_inspect_text_writes_every_output(cli, tiny_dir, tmp_path):
    out = tmp_path / "report"
    code, stdout, _ = cli(
        "inspect",
        "--text",
        "Hello world, the text.",
        "--model",
        str(tiny_dir),
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "entropy-histogram.png",
        "forking-tokens.png",
        "report.html",
        "signals.csv",
        "signals.json",
    ]
    data = json.loads((out / "signals.json").read_text())
    assert data["text"] == "Hello world, the text."
    assert "80th percentile" in stdout and "entropy < 0.01" in stdout
    assert (out / "entropy-histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_existing_output_is_never_overwritten(cli, tiny_dir, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, stdout, _ = cli(
        "inspect",
        "--text",
        "abc def",
        "--model",
        str(tiny_dir),
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0
    assert (out / "mine.txt").read_text() == "keep me"
    assert not (out / "report.html").exists()
    assert (tmp_path / "report-2" / "report.html").is_file()
    assert "report-2" in stdout


def test_inspect_file_and_generate(cli, tiny_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("Some words in a file.\n", encoding="utf-8")
    assert (
        cli(
            "inspect",
            "--file",
            str(source),
            "--model",
            str(tiny_dir),
            "--out",
            str(tmp_path / "a"),
            "--quiet",
        )[0]
        == 0
    )
    code, _, _ = cli(
        "inspect",
        "--prompt",
        "2+2?",
        "--generate",
        "6",
        "--model",
        str(tiny_dir),
        "--out",
        str(tmp_path / "b"),
        "--seed",
        "1",
        "--quiet",
    )
    assert code == 0
    data = json.loads((tmp_path / "b" / "signals.json").read_text())
    assert data["prompt"] == "2+2?" and 1 <= len(data["tokens"]) <= 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "--text", ""], "empty"),
        (["inspect", "--text", "   "], "empty"),
        (["inspect", "--file", "/no/such/file.txt"], "no such file"),
        (["inspect", "--text", "x", "--model", "/no/such/model"], "no model at"),
        (["inspect", "--text", "x", "--rho", "0"], "rho"),
        (["inspect", "--text", "x", "--rho", "1.5"], "rho"),
        (["inspect", "--text", "x", "--rho", "abc"], "invalid float"),
        (["inspect"], "exactly one"),
        (["inspect", "--text", "x", "--file", "y"], "exactly one"),
        (["inspect", "--text", "x", "--generate", "5"], "--generate needs --prompt"),
        (["inspect", "--prompt", "q", "--generate", "0"], "at least 1"),
        (["inspect", "--text", "x", "--max-tokens", "0"], "at least 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, argv, message):
    code, _, err = cli(*argv)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1


def test_non_utf8_file(cli, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    code, _, err = cli("inspect", "--file", str(bad))
    assert code == 2 and "not UTF-8" in err


def test_text_longer_than_context_suggests_max_tokens(cli, tiny_dir, tmp_path):
    long_text = "the quick brown fox jumps over the lazy dog " * 200
    code, _, err = cli(
        "inspect",
        "--text",
        long_text,
        "--model",
        str(tiny_dir),
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 2 and "--max-tokens" in err and "256" in err
    assert not (tmp_path / "r").exists()
    code, _, _ = cli(
        "inspect",
        "--text",
        long_text,
        "--model",
        str(tiny_dir),
        "--max-tokens",
        "200",
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 0


def test_model_directory_without_a_model(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("inspect", "--text", "x", "--model", str(tmp_path / "empty"))
    assert code == 2 and "config.json" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    code, _, err = cli("inspect", "--text", "x", "--model", str(tmp_path / "broken"))
    assert code == 2 and err.startswith("error: could not load")


def test_real_entry_point_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tokensieve", "inspect", "--file", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot read '{tmp_path / 'missing'}': no such file"
    ]


def test_inspect_marks_tokens_a_kv_policy_keeps(cli, tiny_dir, tmp_path):
    out = tmp_path / "kv"
    text = "the quick brown fox jumps over the lazy dog and keeps running. " * 3
    code, _, err = cli(
        "inspect",
        "--text",
        text,
        "--model",
        str(tiny_dir),
        "--kv-policy",
        "h2o",
        "--budget",
        "0.5",
        "--signal",
        "kv_kept",
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0, err
    assert (out / "kv-kept.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "signals.json").read_text())
    kept = [t["kv_kept"] for t in data["tokens"]]
    assert all(0.0 <= k <= 1.0 for k in kept)
    # The sequence read is BOS + text; half of it is kept per layer and head.
    assert abs(sum(kept) - (len(kept) + 1) // 2) <= 1
    assert kept[-1] == 1.0  # the recent window
    assert '<option value="kv_kept" selected>' in (out / "report.html").read_text()


def test_kv_kept_signal_needs_a_policy(cli):
    code, _, err = cli("inspect", "--text", "x", "--signal", "kv_kept")
    assert code == 2 and "--kv-policy" in err
