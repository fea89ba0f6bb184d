"""`rl train` adopts only its own run directories (issue case 3), writes run.json only for a
configuration that can run, and `rl compare` reads a metrics file cut by a kill."""

from __future__ import annotations

import json
import shutil

from tests.reliability.conftest import one_line_error, snapshot

FAST = ["--steps", "2", "--save-every", "1", "--group-size", "2", "--prompts-per-step", "2",
        "--rollout-prompts", "2", "--max-new-tokens", "4", "--learning-rate", "0.01",
        "--quiet"]  # fmt: skip


def train(cli, tiny_dir, out, *extra):
    return cli("rl", "train", "--task", "arithmetic", "--model", tiny_dir, "--out", out,
               *FAST, *extra)  # fmt: skip


def test_a_directory_of_user_files_is_not_taken_over(cli, tiny_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text('{"my": "numbers"}\n')
    (mine / "README.md").write_text("# my project\n")
    before = snapshot(mine)
    code, _, err = train(cli, tiny_dir, mine)
    assert one_line_error(code, err, "not a tokensieve rl run")
    assert snapshot(mine) == before


def test_a_finished_run_is_left_as_it_is(cli, tiny_dir, tmp_path):
    run = tmp_path / "run"
    assert train(cli, tiny_dir, run)[0] == 0
    for checkpoint in run.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)  # a user freeing disk space after the run
    before = snapshot(run)
    code, stdout, err = train(cli, tiny_dir, run)
    assert code == 0, err
    assert "final" in stdout
    assert snapshot(run) == before  # metrics kept, nothing trained again


def test_an_invalid_configuration_leaves_no_run_behind(cli, tiny_dir, tmp_path):
    run = tmp_path / "run"
    for bad, message in ((["--learning-rate", "-1"], "learning-rate"),
                         (["--learning-rate", "nan"], "learning-rate"),
                         (["--temperature", "nan"], "temperature"),
                         (["--top-p", "0"], "top-p"),
                         (["--epsilon-high", "-0.1"], "epsilon-high")):  # fmt: skip
        code, _, err = train(cli, tiny_dir, run, *bad)
        assert one_line_error(code, err, message), (bad, err)
        assert not run.exists()
    code, _, err = train(cli, tiny_dir, run)  # the corrected command is not "different"
    assert code == 0, err


def test_compare_reads_a_metrics_file_cut_by_a_kill(cli, tiny_dir, tmp_path):
    run = tmp_path / "run"
    assert train(cli, tiny_dir, run)[0] == 0
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "rew')  # the half line a kill leaves
    code, stdout, err = cli("rl", "compare", run, "--out", tmp_path / "cmp", "--no-analysis",
                            "--quiet")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["runs"]["run"]["step"] == 2


def test_quiet_training_prints_only_its_result(tiny_dir, tmp_path):
    from tests.reliability.conftest import run_cli

    result = run_cli("rl", "train", "--task", "arithmetic", "--model", tiny_dir,
                     "--out", tmp_path / "run", *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip().splitlines() == [result.stdout.strip()]  # one line


def test_a_model_that_cannot_load_leaves_no_run_behind(cli, tiny_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("rl", "train", "--task", "arithmetic", "--model", tmp_path / "no-model",
                       "--out", run, *FAST)  # fmt: skip
    assert one_line_error(code, err, "no model at")
    assert not run.exists()  # so the corrected command is not "a different configuration"
    assert train(cli, tiny_dir, run)[0] == 0
