"""Helpers for the reliability suite: file-tree snapshots and a CLI run killed at a chosen
point (`tokensieve.outputs.pause_point`)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones included) with a digest of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def run_cli(*argv, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`tokensieve` in a fresh process, as a user runs it."""
    command = [sys.executable, "-m", "tokensieve.cli", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_at(point: str, argv, tmp_path: Path, sig=signal.SIGTERM):
    """Run the CLI until it reaches `point`, send `sig`, return (exit code, stderr)."""
    flag = tmp_path / f"paused-{point}"
    env = {**os.environ, "TOKENSIEVE_PAUSE_AT": point, "TOKENSIEVE_PAUSE_FLAG": str(flag)}
    command = [sys.executable, "-m", "tokensieve.cli", *map(str, argv)]
    # a shell's background job (`make test &`) ignores SIGINT, and a child inherits that
    # (Python then keeps it ignored): give the CLI the default disposition, as a terminal has
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + 240
    while not flag.exists():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"ended (code {process.returncode}) before reaching {point}: {err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"never reached {point}")
        time.sleep(0.05)
    flag.unlink()
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def one_line_error(code: int, err: str, message: str) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in err
