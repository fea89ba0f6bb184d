"""`tokensieve generate` on a tiny model directory, and its answers to bad input."""

from __future__ import annotations

import ast
import json
import sys

import pytest


@pytest.fixture
def predicates(tmp_path, monkeypatch):
    (tmp_path / "user_predicates.py").write_text(
        "def no_e(text):\n    return 'e' not in text\n\n"
        "def short(text, complete):\n"
        "    return len(text) <= 2 and (len(text) > 0 or not complete)\n\n"
        "def boom(text):\n    raise ValueError('broken on purpose')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("user_predicates", None)


@pytest.mark.parametrize("sampler", ["masking", "awrs", "smc"])
def test_generate_json_output(cli, tiny_dir, sampler):
    code, out, _ = cli(
        "generate",
        "--prompt",
        "Letters:",
        "--regex",
        "[ab]{1,3}",
        "--sampler",
        sampler,
        "--max-tokens",
        "4",
        "--model",
        str(tiny_dir),
        "--json",
        "--seed",
        "1",
    )
    assert code == 0
    data = json.loads(out)
    assert data["sampler"] == sampler and data["completions"]
    assert abs(sum(c["weight"] for c in data["completions"]) - 1) < 1e-9
    for completion in data["completions"]:
        assert set(completion["text"]) <= {"a", "b"} and 1 <= len(completion["text"]) <= 3
    if sampler == "masking":
        assert data["checks_per_token"] > 300


def test_generate_with_two_argument_predicate(cli, tiny_dir, predicates):
    code, out, err = cli(
        "generate",
        "--prompt",
        "x",
        "--predicate",
        "user_predicates:short",
        "--model",
        str(tiny_dir),
        "--sampler",
        "smc",
        "--particles",
        "3",
        "--max-tokens",
        "4",
        "--quiet",
    )
    assert code == 0
    assert "checks/token" in err
    texts = [ast.literal_eval(line.split(None, 1)[1]) for line in out.splitlines()]
    assert texts and all(1 <= len(text) <= 2 for text in texts)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--regex", "[a-"], "invalid regular expression"),
        (["--regex", ""], "empty"),
        (["--predicate", "nosuchmodule_xyz:f"], "cannot import"),
        (["--predicate", "user_predicates:missing"], "no function"),
        (["--predicate", "no_colon"], "module:function"),
        (["--predicate", "user_predicates:boom"], "raised ValueError: broken on purpose"),
        ([], "exactly one constraint"),
        (["--regex", "a", "--predicate", "user_predicates:no_e"], "exactly one constraint"),
        (["--regex", "a", "--particles", "0"], "at least 1"),
        (["--regex", "a", "--max-tokens", "0"], "at least 1"),
        (["--regex", "a", "--ess-threshold", "2"], "ess-threshold"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny_dir, predicates, argv, message):
    code, _, err = cli("generate", "--prompt", "hi", "--model", str(tiny_dir), "--quiet", *argv)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_unsatisfiable_within_budget_exits_1(cli, tiny_dir):
    code, _, err = cli(
        "generate",
        "--prompt",
        "hi",
        "--regex",
        "[ab]{30}",
        "--max-tokens",
        "3",
        "--model",
        str(tiny_dir),
        "--quiet",
    )
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: no completion satisfies the constraint within 3 tokens"
    )


def test_generate_with_json_schema_and_grammar(cli, tiny_dir, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "boolean"}')
    code, out, _ = cli(
        "generate",
        "--prompt",
        "ok?",
        "--json-schema",
        str(schema),
        "--model",
        str(tiny_dir),
        "--max-tokens",
        "8",
        "--json",
        "--sampler",
        "smc",
    )
    assert code == 0
    assert {c["text"] for c in json.loads(out)["completions"]} <= {"true", "false"}
    grammar = tmp_path / "g.lark"
    grammar.write_text('start: "yes" | "no"\n')
    code, out, _ = cli(
        "generate",
        "--prompt",
        "ok?",
        "--grammar",
        str(grammar),
        "--model",
        str(tiny_dir),
        "--max-tokens",
        "8",
        "--json",
    )
    assert code == 0
    assert {c["text"] for c in json.loads(out)["completions"]} <= {"yes", "no"}


@pytest.mark.parametrize(
    ("flag", "content", "message"),
    [
        ("--json-schema", '{"type": "nonsense"}', "invalid JSON schema"),
        ("--json-schema", "{not json", "not valid JSON"),
        ("--grammar", "start: foo\n", "invalid grammar"),
        ("--grammar", "", "empty"),
    ],
)
def test_invalid_schema_or_grammar(cli, tiny_dir, tmp_path, flag, content, message):
    path = tmp_path / "spec"
    path.write_text(content)
    code, _, err = cli("generate", "--prompt", "x", flag, str(path), "--quiet")
    assert code == 2 and err.startswith("error: ") and message in err
    assert err.count("\n") == 1


def test_missing_schema_file(cli):
    code, _, err = cli("generate", "--prompt", "x", "--json-schema", "/no/such.json")
    assert code == 2 and "no such file" in err


def test_paper_estimator_from_the_command_line(cli, tiny_dir):
    code, stdout, err = cli("generate", "--prompt", "Say yes", "--regex", "[a-z ]*",
                            "--model", tiny_dir, "--max-tokens", "3", "--estimator", "paper",
                            "--json", "--quiet")  # fmt: skip
    assert code in (0, 1), err
    code, _, err = cli("generate", "--prompt", "x", "--regex", "a", "--estimator", "magic")
    assert code == 2 and "invalid choice" in err and len(err.strip().splitlines()) == 1
