"""Every kill leaves either the previous state or the complete new one, and no hidden
staging data (issue cases 2 and 5): a process stopped by SIGTERM or SIGINT at a chosen
point (`tokensieve.outputs.pause_point`), then the same command run again."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from tests.reliability.conftest import kill_at, run_cli, snapshot

FAST_RL = ["--steps", "2", "--save-every", "1", "--group-size", "2", "--prompts-per-step",
           "2", "--rollout-prompts", "2", "--max-new-tokens", "4", "--learning-rate", "0.01",
           "--quiet"]  # fmt: skip


def transplant_argv(tiny_dir, out):
    return ["vocab", "transplant", "--model", tiny_dir, "--tokenizer", tiny_dir,
            "--method", "mean", "--out", out]  # fmt: skip


@pytest.mark.parametrize("point", ["model-saved", "staged"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_transplant_leaves_nothing(tiny_dir, tmp_path, point, sig):
    work = tmp_path / "work"
    work.mkdir()
    code, err = kill_at(point, transplant_argv(tiny_dir, work / "out"), tmp_path, sig)
    assert code == (143 if sig == signal.SIGTERM else 130), err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert list(work.iterdir()) == []  # neither the output nor a hidden staging folder


def test_killed_forced_transplant_keeps_the_previous_output(tiny_dir, tmp_path):
    work = tmp_path / "work"
    argv = transplant_argv(tiny_dir, work / "out")
    assert run_cli(*argv).returncode == 0
    (work / "out" / "mine.txt").write_text("the earlier output, with a note")
    before = snapshot(work)
    code, err = kill_at("staged", [*argv, "--force"], tmp_path)
    assert code == 143, err
    assert snapshot(work) == before  # the earlier output intact, no staging left


def reward_rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["reward"], r["loss"]) for r in rows if "reward" in r]


def test_kill_during_a_checkpoint_resumes_from_the_last_complete_one(cli, tiny_dir, tmp_path):
    argv = ["rl", "train", "--task", "arithmetic", "--model", tiny_dir, *FAST_RL]
    whole = tmp_path / "whole"
    assert cli(*argv, "--out", whole)[0] == 0
    run = tmp_path / "run"
    code, err = kill_at("checkpoint-2-saved", [*argv, "--out", run], tmp_path)
    assert code == 143, err
    assert (run / "checkpoint-2").is_dir()  # written, but not marked complete
    assert not (run / "checkpoint-2" / "tokensieve-complete.json").exists()
    code, _, err = cli(*argv, "--out", run)  # the same command again
    assert code == 0, err
    assert (run / "checkpoint-2" / "tokensieve-complete.json").is_file()
    assert reward_rows(run) == reward_rows(whole)  # nothing lost, nothing twice, same values


def test_cut_checkpoint_is_never_resumed_from(cli, tiny_dir, tmp_path):
    """The state the issue found after a kill: truncated optimizer.pt, no trainer_state."""
    argv = ["rl", "train", "--task", "arithmetic", "--model", tiny_dir, *FAST_RL,
            "--out", tmp_path / "run"]  # fmt: skip
    assert cli(*argv)[0] == 0
    run = tmp_path / "run"
    shutil.rmtree(run / "final")
    checkpoint = run / "checkpoint-2"
    (checkpoint / "tokensieve-complete.json").unlink()
    (checkpoint / "trainer_state.json").unlink()
    optimizer = checkpoint / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    code, _, err = cli(*argv)
    assert code == 0, err
    assert [step for step, *_ in reward_rows(run)] == [1, 2]
    assert (run / "final" / "config.json").is_file()


def test_kill_during_the_final_save_leaves_no_staging(cli, tiny_dir, tmp_path):
    argv = ["rl", "train", "--task", "arithmetic", "--model", tiny_dir, *FAST_RL,
            "--out", tmp_path / "run"]  # fmt: skip
    code, err = kill_at("final-saved", argv, tmp_path)
    assert code == 143, err
    run = tmp_path / "run"
    assert not (run / "final").exists() and not (run / ".final.staging").exists()
    code, _, err = cli(*argv)
    assert code == 0, err
    assert (run / "final" / "config.json").is_file()
    assert [step for step, *_ in reward_rows(run)] == [1, 2]


def test_killed_report_leaves_no_directory(tiny_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    argv = ["inspect", "--text", "A short text.", "--model", tiny_dir, "--out", work / "report",
            "--quiet"]  # fmt: skip
    code, err = kill_at("staged", argv, tmp_path)
    assert code == 143, err
    assert list(work.iterdir()) == []  # neither the reserved name nor the staged files
