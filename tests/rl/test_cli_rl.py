"""`tokensieve rl` on a tiny model: train, resume after an interruption, refuse bad input."""

from __future__ import annotations

import json
import shutil

import pytest

FAST = ["--steps", "2", "--save-every", "1", "--group-size", "2", "--prompts-per-step", "2",
        "--rollout-prompts", "2", "--max-new-tokens", "4", "--learning-rate", "0.01",
        "--quiet"]  # fmt: skip


def reward_steps(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "reward" in r]


def eval_steps(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "test_accuracy" in r]


def test_train_resume_compare_eval(cli, tiny_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["rl", "train", "--task", "arithmetic", "--model", tiny_dir, "--out", out, *FAST,
            "--eval-every", "1", "--eval-problems", "2"]  # fmt: skip
    code, _, err = cli(*argv)
    assert code == 0, err
    assert reward_steps(out) == [1, 2]
    assert eval_steps(out) == [0, 1, 2]
    assert (out / "final" / "config.json").is_file() and (out / "checkpoint-2").is_dir()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("tokensieve/selected_fraction" in r for r in rows)
    # an interruption after step 1's checkpoint: step 2's metrics were logged, not saved
    shutil.rmtree(out / "checkpoint-2")
    shutil.rmtree(out / "final")
    code, _, err = cli(*argv)
    assert code == 0, err
    assert reward_steps(out) == [1, 2]  # resumed at step 2: nothing lost, nothing twice
    assert eval_steps(out) == [0, 1, 2]
    code, stdout, err = cli("rl", "compare", out, "--out", tmp_path / "cmp",
                            "--problems", "2", "--quiet")  # fmt: skip
    assert code == 0, err
    for name in ("rl-curves.png", "rl-entropy-histogram.png", "rl-forks.png"):
        assert (tmp_path / "cmp" / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["runs"]["run"]["step"] == 2
    assert 0.0 <= summary["forking"]["run"]["overlap_with_base"] <= 1.0
    assert summary["forking"]["base"]["overlap_with_base"] == 1.0
    evaluate = ["rl", "eval", "--task", "arithmetic", "--model", out / "final", "--problems", "2"]
    code, stdout, _ = cli(*evaluate, "--max-new-tokens", "4", "--json", "--quiet")
    assert code == 0 and 0.0 <= json.loads(stdout)["test_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rho", "0"], "rho must be in (0, 1]"),
        (["--rho", "1.5"], "rho must be in (0, 1]"),
        (["--mask", "kl-cov", "--cov-ratio", "0"], "cov-ratio must be in (0, 1]"),
        (["--plain-trl", "--mask", "random"], "use it with --mask all or top-entropy"),
        (["--top-p", "0"], "top-p must be in (0, 1]"),
        (["--eval-every", "-1"], "eval-every must be 0"),
        (["--eval-problems", "0"], "eval-problems must be at least 1"),
        (["--mask", "magic"], "invalid choice"),
        (["--task", "poetry"], "invalid choice"),
        (["--temperature", "0"], "--temperature must be positive"),
        (["--temperature", "nan"], "--temperature must be a number"),
        (["--learning-rate", "0"], "--learning-rate must be a positive number"),
        (["--epsilon-high", "-0.1"], "--epsilon-high must be a number"),
        (["--group-size", "1"], "--group-size must be at least 2"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--normalize", "tokens"], "invalid choice"),
    ],
)
def test_bad_options(cli, tiny_dir, tmp_path, extra, message):
    argv = ["rl", "train", "--task", "arithmetic", "--model", tiny_dir, "--out", tmp_path / "r"]
    code, _, err = cli(*argv, *FAST, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--problems", "0"], "--problems must be at least 1"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--temperature", "-1"], "--temperature must be a number"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--seed", "-3"], "--seed: must be an integer"),
    ],
)
def test_eval_bad_options(cli, tiny_dir, extra, message):
    code, _, err = cli("rl", "eval", "--task", "arithmetic", "--model", tiny_dir, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_resume_with_other_config_and_missing_chat_template(
    cli, tiny_dir, tiny_dir_without_chat_template, tmp_path
):
    out = tmp_path / "run"
    (out).mkdir()
    (out / "run.json").write_text(json.dumps({"task": "arithmetic", "rho": 0.5}))
    code, _, err = cli("rl", "train", "--task", "arithmetic", "--model", tiny_dir,
                       "--out", out, *FAST)  # fmt: skip
    assert code == 2 and "different configuration" in err
    code, _, err = cli("rl", "train", "--task", "arithmetic",
                       "--model", tiny_dir_without_chat_template,
                       "--out", tmp_path / "r2", *FAST)  # fmt: skip
    assert code == 2 and "chat template" in err


def test_compare_refuses_bad_input(cli, tmp_path):
    code, _, err = cli("rl", "compare", tmp_path, "--problems", "0")
    assert code == 2 and "--problems must be at least 1" in err
    code, _, err = cli("rl", "compare", tmp_path / "nothing")
    assert code == 2 and "not a tokensieve rl run" in err and len(err.strip().splitlines()) == 1
    base = tmp_path / "base"
    base.mkdir()
    code, _, err = cli("rl", "compare", base, "--out", tmp_path / "c")
    assert code == 2 and "named 'base'" in err


def test_compare_reads_hand_made_runs_without_a_traceback(cli, tmp_path):
    """A run.json without a task is refused in one line; metrics rows that are not
    numbers (an edited file) are skipped, so the rest still plots."""
    run = tmp_path / "edited"
    (run / "final").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"rho": 0.2}))
    rows = [{"step": 1, "reward": 0.5}, {"step": 2, "reward": None, "entropy": "high"},
            {"reward": 1.0}, [1, 2], {"step": 3, "reward": 0.75}]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli("rl", "compare", run, "--out", tmp_path / "c")
    assert code == 2 and "not a tokensieve run file" in err and len(err.strip().splitlines()) == 1
    code, stdout, err = cli("rl", "compare", run, "--out", tmp_path / "d", "--no-analysis")
    assert code == 0, err
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["runs"]["edited"] == {
        "step": 3,
        "reward": 0.75,
    }


def test_compare_refuses_an_analysis_across_tasks(cli, tmp_path):
    """The overlap analysis scores one base model's answers to one task: runs of two
    tasks are refused before any model loads (--no-analysis still compares them)."""
    from dataclasses import asdict

    from tokensieve.rl.config import RunConfig

    runs = []
    for task in ("arithmetic", "countdown"):
        run = tmp_path / task
        (run / "final").mkdir(parents=True)
        (run / "run.json").write_text(json.dumps(asdict(RunConfig(task=task))))
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
        runs.append(run)
    code, _, err = cli("rl", "compare", *runs, "--out", tmp_path / "c")
    assert code == 2 and "different models or tasks" in err
    code, _, err = cli("rl", "compare", *runs, "--out", tmp_path / "d", "--no-analysis")
    assert code == 0, err


@pytest.mark.parametrize(
    "failure, message",
    [
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64704 vs 64596"),
         "is the disk full?"),
        (OSError(28, "No space left on device"), "No space left on device"),
    ],
)  # fmt: skip
def test_a_checkpoint_that_cannot_be_written_is_one_line(cli, tiny_dir, tmp_path, monkeypatch,
                                                         failure, message):  # fmt: skip
    """A full disk shows in torch.save as a RuntimeError from its zip writer (seen in
    bench-rl) or as an OSError: both end in one line that says how to resume."""
    from trl import GRPOTrainer

    def fail(self, *args, **kwargs):
        raise failure

    monkeypatch.setattr(GRPOTrainer, "_save_checkpoint", fail)
    argv = ["rl", "train", "--task", "arithmetic", "--model", tiny_dir, "--out", tmp_path / "r"]
    code, _, err = cli(*argv, *FAST)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
