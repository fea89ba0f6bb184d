"""`tokensieve speculate` and `inspect --speculate`: answers, figures, bad input."""

from __future__ import annotations

import json

import pytest


def test_speculate_prints_the_greedy_answer_and_its_figures(cli, tiny_dir):
    code, out, err = cli("speculate", "--model", tiny_dir, "--prompt", "The quick brown fox",
                         "--no-chat", "--max-new-tokens", "40", "--quiet")  # fmt: skip
    assert code == 0, err
    assert "tokens per forward" in err and "output identical" in err
    code, out, err = cli("speculate", "--model", tiny_dir, "--prompt", "The quick brown fox",
                         "--no-chat", "--max-new-tokens", "40", "--json", "--method",
                         "lookahead")  # fmt: skip
    figures = json.loads(out)
    assert figures["identical_to_greedy"] is True and figures["new_tokens"] == 40
    assert figures["accepted_per_forward"] >= 1.0 and figures["method"] == "lookahead"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--method", "medusa"], "invalid choice"),
        (["--tree-size", "0"], "--tree-size must be 1 to 80"),
        (["--tree-size", "81"], "--tree-size must be 1 to 80"),
        (["--method", "lookahead-trie", "--tree-size", "400"], "draft tree has 400 nodes"),
        (["--temperature", "0.7"], "speculative decoding here is greedy"),
        (["--top-p", "0.9"], "speculative decoding here is greedy"),
        (["--max-new-tokens", "500"], "reads at most 256"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny_dir, argv, message):
    code, out, err = cli("speculate", "--model", tiny_dir, "--prompt", "Hello", *argv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_empty_prompt_is_refused(cli):
    code, _, err = cli("speculate", "--prompt", "  ")
    assert code == 2 and "the prompt is empty" in err


def test_inspect_marks_the_tokens_a_drafter_had_for_free(cli, tiny_dir, tmp_path):
    out = tmp_path / "report"
    code, _, err = cli("inspect", "--model", tiny_dir, "--text",
                       "The quick brown fox jumps over the lazy dog. " * 4,
                       "--speculate", "recycling", "--out", out, "--quiet")  # fmt: skip
    assert code == 0, err
    data = json.loads((out / "signals.json").read_text())
    assert "speculated" in data["signals"]
    values = [row["speculated"] for row in data["tokens"]]
    assert min(values) >= 1
    assert max(values) > 1  # the repeated sentence comes several tokens per forward
    assert (out / "speculated.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--speculate", "medusa"], "unknown speculation method 'medusa'"),
        (["--speculate", "recycling", "--kv-policy", "h2o"], "give one of --kv-policy"),
    ],
)
def test_inspect_speculate_bad_input(cli, tiny_dir, tmp_path, argv, message):
    code, _, err = cli("inspect", "--model", tiny_dir, "--text", "Hello there",
                       "--out", tmp_path / "r", *argv)  # fmt: skip
    assert code == 2 and message in err, err
