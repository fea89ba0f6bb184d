"""The command line answers before torch loads (issue case 8): --help and a bad option in
well under 2 s, from a fresh process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.reliability.conftest import run_cli


def test_parsing_imports_no_torch():
    heavy = "('torch', 'transformers', 'numpy')"
    code = ("import sys; from tokensieve.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {heavy} if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        (["vocab", "transplant", "--help"], 0),
        (["inspect", "--no-such-option"], 2),
        (["kv", "generate", "--policy", "magic"], 2),
        (["rl", "train", "--task", "arithmetic", "--steps", "many"], 2),
    ],
)
def test_help_and_bad_options_answer_at_once(argv, code):
    started = time.perf_counter()
    result = run_cli(*argv)
    seconds = time.perf_counter() - started
    assert result.returncode == code, result.stderr
    if code == 2:
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert seconds < 2.0, f"{argv} took {seconds:.2f} s"
