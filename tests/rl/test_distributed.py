"""The distributed path: two CPU processes under `accelerate launch` train one run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_processes_train_and_log_once(tiny_dir, tmp_path):
    out = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    command = [
        str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "tokensieve.cli", "rl", "train", "--task", "arithmetic", "--model", str(tiny_dir),
        "--out", str(out), "--steps", "2", "--save-every", "1", "--group-size", "2",
        "--prompts-per-step", "2", "--rollout-prompts", "2", "--max-new-tokens", "4", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]  # written by process 0 only
    assert (out / "final" / "config.json").is_file()
