"""`tokensieve kv generate` on a tiny model directory, and its answers to bad input."""

from __future__ import annotations

import pytest

from tokensieve.kv.cli import parse_budget


@pytest.mark.parametrize("policy", ["keyformer", "h2o", "streaming", "full"])
def test_kv_generate_reports_kept_tokens(cli, tiny_dir, tmp_path, policy):
    context = tmp_path / "context.txt"
    context.write_text("the quick brown fox jumps over the lazy dog. " * 4)
    code, out, err = cli(
        "kv",
        "generate",
        "--policy",
        policy,
        "--budget",
        "0.5",
        "--file",
        str(context),
        "--prompt",
        "What jumps?",
        "--max-new-tokens",
        "5",
        "--model",
        str(tiny_dir),
        "--quiet",
    )
    assert code == 0, err
    assert f"{policy}: kept" in err and "MiB full" in err


def test_kv_generate_with_sirllm_stays_within_its_budget(cli, tiny_dir, tmp_path):
    """SirLLM reads the prompt as inputs that make room first: after the answer the
    cache holds at most its budget (the prompt is 4x the budget)."""
    import re

    context = tmp_path / "context.txt"
    context.write_text("the quick brown fox jumps over the lazy dog. " * 4)
    code, _, err = cli("kv", "generate", "--policy", "sirllm", "--budget", "0.25", "--file",
                       context, "--prompt", "What jumps?", "--max-new-tokens", "6", "--model",
                       tiny_dir, "--quiet")  # fmt: skip
    assert code == 0, err
    kept, seen, budget = map(int, re.search(r"kept (\d+) of (\d+) .*budget (\d+)", err).groups())
    assert kept <= budget < seen


def test_kv_generate_tokenselect_sparse_prefill_and_selection_cache(cli, tiny_dir, tmp_path):
    import re

    context = tmp_path / "context.txt"
    context.write_text("the quick brown fox jumps over the lazy dog. " * 4)
    code, _, err = cli("kv", "generate", "--policy", "tokenselect", "--budget", "0.3", "--file",
                       context, "--prompt", "What jumps?", "--max-new-tokens", "6",
                       "--prefill", "sparse", "--reuse-threshold", "0.0", "--model", tiny_dir,
                       "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0, err
    computed, reused = map(
        int, re.search(r"selections: (\d+) computed, (\d+) reused", err).groups()
    )
    assert computed > 0 and computed + reused > 0


def test_a_model_spread_over_devices_is_refused(tiny):
    from copy import deepcopy

    from tokensieve import UserError
    from tokensieve.kv import CompressedCache, compression, make_policy

    model = deepcopy(tiny[0])
    model.lm_head.to("meta")  # as if part of it had been offloaded
    cache = CompressedCache(model.config, make_policy("h2o", budget=0.5))
    with pytest.raises(UserError, match="spread over"), compression(model, cache):
        pass


def test_parse_budget():
    assert parse_budget("0.2") == 0.2 and isinstance(parse_budget("0.2"), float)
    assert parse_budget("512") == 512 and isinstance(parse_budget("512"), int)
    assert parse_budget("1") == 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "0"], "--budget must be in"),
        (["--budget", "-0.5"], "--budget must be in"),
        (["--budget", "1.5"], "--budget must be in"),
        (["--budget", "lots"], "fraction like 0.2"),
        (["--budget", "8", "--sink", "4", "--recent", "8"], "exceed the budget"),
        (["--policy", "nope"], "invalid choice"),
        (["--max-new-tokens", "0"], "at least 1"),
        (["--policy", "tokenselect", "--reuse-threshold", "1.5"], "must be in [0, 1]"),
        (["--policy", "tokenselect", "--reuse-threshold", "-0.1"], "must be in [0, 1]"),
        (["--policy", "h2o", "--prefill", "sparse"], "--prefill is TokenSelect's"),
        (["--policy", "tidaldecode", "--reuse-threshold", "0.9"], "TokenSelect's"),
        (["--policy", "streaming", "--recent", "4"], "--recent does not apply"),
        (["--policy", "snapkv", "--recent", "4"], "--recent does not apply"),
        (["--policy", "tidaldecode", "--sink", "4"], "--sink does not apply"),
        (["--device", "banana"], "is not a device"),
        pytest.param(
            ["--device", "cuda"],
            "no cuda device is available",
            marks=pytest.mark.skipif(
                __import__("torch").cuda.is_available(), reason="this machine has CUDA"
            ),
        ),  # fmt: skip
    ],
)
def test_bad_input(cli, tiny_dir, argv, message):
    code, _, err = cli(
        "kv",
        "generate",
        "--prompt",
        "a b c d e f g h i j k l m n o p",
        "--model",
        str(tiny_dir),
        "--quiet",
        *argv,
    )
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1


def test_nothing_to_read(cli):
    code, _, err = cli("kv", "generate")
    assert code == 2 and "nothing to read" in err


def test_kv_eval_writes_results(cli, tiny_dir, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog and keeps running. " * 6)
    code, out, err = cli(
        "kv",
        "eval",
        "--policies",
        "h2o",
        "streaming",
        "--budgets",
        "0.3",
        "0.5",
        "--file",
        str(text),
        "--context",
        "60",
        "--decode",
        "20",
        "--passkey-cases",
        "1",
        "--passkey-tokens",
        "120",
        "--passkey-mode",
        "agnostic",
        "--model",
        str(tiny_dir),
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 0, err
    rows = __import__("json").loads((tmp_path / "r" / "kv-eval.json").read_text())
    assert [r["policy"] for r in rows] == ["full", "h2o", "streaming", "h2o", "streaming"]
    assert rows[0]["kl_to_full"] == 0 and all("passkey_accuracy" in r for r in rows)
    assert "top1" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budgets", "2.5"], "--budget must be in"),
        (["--context", "1"], "--context must be"),
        (["--passkey-cases", "-1"], "must not be negative"),
        (["--multiturn-cases", "-2"], "must not be negative"),
        (["--multiturn-cases", "1", "--multiturn-turns", "1"], "2 to 24 turns"),
        (["--multiturn-cases", "1", "--multiturn-turns", "25"], "2 to 24 turns"),
        (["--passkey-mode", "sideways"], "invalid choice"),
        (["--policies", "magic"], "invalid choice"),
        (["--policies", "h2o", "--prefill", "sparse"], "add tokenselect"),
        (["--policies", "tokenselect", "--reuse-threshold", "2"], "must be in [0, 1]"),
    ],
)
def test_kv_eval_bad_input(cli, tiny_dir, argv, message):
    code, _, err = cli("kv", "eval", "--model", str(tiny_dir), "--quiet", *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_kv_eval_multiturn_reports_accuracy_per_asking_turn(cli, tiny_dir, tmp_path):
    import inspect
    import json
    import textwrap

    text = tmp_path / "text.txt"
    text.write_text(inspect.getsource(textwrap))
    code, out, err = cli("kv", "eval", "--policies", "sirllm", "--budgets", "0.5", "--file", text,
                         "--context", "60", "--decode", "4", "--multiturn-cases", "2",
                         "--multiturn-turns", "2", "--multiturn-tokens", "32", "--model",
                         tiny_dir, "--out", tmp_path / "r", "--quiet")  # fmt: skip
    assert code == 0, err
    rows = json.loads((tmp_path / "r" / "kv-eval.json").read_text())
    assert [sorted(r["multiturn_accuracy"]) for r in rows] == [["1"]] * 2
    assert "multi-turn" in out


def test_kv_eval_passkey_needs_a_chat_template(cli, tiny_dir_without_chat_template):
    """Passkey prompts are chat turns: a model without a template is refused in one line
    before the fidelity pass, and --passkey-cases 0 still evaluates it."""
    argv = ["kv", "eval", "--model", str(tiny_dir_without_chat_template), "--quiet",
            "--policies", "streaming", "--context", "64", "--decode", "4",
            "--budgets", "0.5"]  # fmt: skip
    code, _, err = cli(*argv, "--passkey-cases", "1")
    assert code == 2 and "no chat template" in err and err.count("\n") == 1, err
    code, _, err = cli(*argv, "--passkey-cases", "0")
    assert code == 0, err
