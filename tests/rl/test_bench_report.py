"""bench-rl's report: ratios pair seeds, and runs whose directories are gone come from the
committed results (seed 0's runs were made on a machine that no longer exists)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import rl
    import rl_report

    yield rl, rl_report
    for name in ("rl", "rl_report", "common"):
        sys.modules.pop(name, None)


def _accuracy(method, seed, start, final, task="arithmetic"):
    """Per-step test-accuracy records of one run, as records_of_runs writes them."""
    return [
        {"benchmark": "rl", "method": method, "implementation": "tokensieve",
         "setting": {"rho": 0.2, "step": step, "seed": seed, "task": task},
         "metric": "test_accuracy", "value": value, "unit": "fraction", "repeats": 1,
         "spread": 0.0}
        for step, value in [(0, start), (40, final)]
    ]  # fmt: skip


def test_ratios_pair_seeds_and_say_when_an_arm_has_fewer(bench):
    _, report = bench
    records = (_accuracy("all", 0, 0.2, 0.5) + _accuracy("all", 1, 0.2, 0.6)
               + _accuracy("top_entropy", 0, 0.2, 0.25)
               + _accuracy("random", 0, 0.2, 0.3) + _accuracy("random", 1, 0.2, 0.9))  # fmt: skip
    text = report.table(records, None, 64)
    # top_entropy has seed 0 only: compared with the anchor's seed 0 (0.5), not its mean 0.55
    assert "- `top_entropy` 0.250 vs 0.500 (0.50) (seed 0 only)" in text
    assert "- `random` 0.600 vs 0.550 (1.09)\n" in text
    # seed-to-seed: |0.5 - 0.6| for all, |0.3 - 0.9| for random
    assert "by 0.350 (median over 2 arms; largest 0.600)" in text


def test_runs_whose_directories_are_gone_come_from_the_committed_results(bench, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    rl, report = bench
    monkeypatch.setattr(rl, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(rl, "RUNS", tmp_path / "runs")
    (tmp_path / "results").mkdir()
    speed = {"benchmark": "rl", "method": "all", "implementation": "trl",
             "setting": {"rho": 1.0, "task": "arithmetic", "seeds": [0], "per": "rollout"},
             "metric": "seconds_per_step", "value": 9.0, "unit": "s", "repeats": 40,
             "spread": 1.0}  # fmt: skip
    committed = (_accuracy("all", 0, 0.2, 0.5) + _accuracy("all", 1, 0.2, 0.7)
                 + _accuracy("all", 0, 0.3, 0.4, task="countdown") + [speed])  # fmt: skip
    (tmp_path / "results" / "rl.json").write_text(json.dumps(committed))
    # seed 1 was rerun here: its records come from its run, not from the old results
    (rl.run_dir("arithmetic", "all", 1) / "final").mkdir(parents=True)
    kept = rl.earlier_records("arithmetic", ["all"], [0, 1])
    assert {(r["setting"]["seed"], r["setting"]["step"]) for r in kept} == {(0, 0), (0, 40)}
    assert all(r["setting"]["task"] == "arithmetic" for r in kept)
    # a run of the arm is present to time, so the old seconds per step are not kept
    assert not [r for r in kept if r["metric"] == "seconds_per_step"]
    # with no run of the arm here, its committed speed is kept, and the table names its seed
    (rl.run_dir("arithmetic", "all", 1) / "final").rmdir()
    kept = rl.earlier_records("arithmetic", ["all"], [0, 1])
    assert [r["value"] for r in kept if r["metric"] == "seconds_per_step"] == [9.0]
    assert "its steps) of the runs of seed 0 whose" in report.table(kept)
    # a median over single steps (before they were per rollout) is not kept
    del speed["setting"]["per"]
    (tmp_path / "results" / "rl.json").write_text(json.dumps(committed))
    kept = rl.earlier_records("arithmetic", ["all"], [0, 1])
    assert not [r for r in kept if r["metric"] == "seconds_per_step"]


def test_runs_the_committed_results_hold_are_not_trained_again(bench, tmp_path, monkeypatch):
    rl, _ = bench
    monkeypatch.setattr(rl, "RESULTS", tmp_path)
    monkeypatch.setattr(rl, "RUNS", tmp_path / "runs")
    # all seed 0 reached the last step; random seed 0 stopped at step 10 (unfinished)
    stopped = [r for r in _accuracy("random", 0, 0.2, 0.3) if r["setting"]["step"] == 0]
    stopped += [{**stopped[0], "setting": {**stopped[0]["setting"], "step": 10}}]
    (tmp_path / "rl.json").write_text(json.dumps(_accuracy("all", 0, 0.2, 0.5) + stopped))
    trained = []
    monkeypatch.setattr(rl, "train", lambda config, out, progress: trained.append(
        (config.task, config.mask, config.seed)))  # fmt: skip
    rl.train_all(["arithmetic"], ["all", "random"], [0, 1])
    assert trained == [("arithmetic", "random", 0), ("arithmetic", "all", 1),
                       ("arithmetic", "random", 1)]  # fmt: skip
    trained.clear()
    rl.train_all(["arithmetic"], ["all"], [0], rerun=True)
    assert trained == [("arithmetic", "all", 0)]


def test_seconds_per_step_are_per_rollout_not_the_midpoint_of_two_modes(bench):
    rl, _ = bench
    # a rollout's first step samples (25 s), its second only updates (9-11 s); a resumed
    # run's metrics may lack a step: that rollout is left out, not halved
    times = {1: 25.0, 2: 9.0, 3: 26.0, 4: 10.0, 5: 24.0, 6: 11.0, 7: 30.0}
    rows = [{"step": step, "step_time": t} for step, t in times.items()]
    rows.insert(2, {"step": 2, "test_accuracy": 0.5})
    assert rl.rollout_times(rows) == [17.0, 18.0, 17.5]


def test_analysis_figures_are_redrawn_only_when_a_trained_model_is_here(bench):
    """With every run taken from the committed results the analysis holds the base model
    alone; a redraw would replace the committed histograms of the trained models."""
    import numpy as np

    from tokensieve.rl.analysis import ForkingAnalysis

    _, report = bench
    records = _accuracy("all", 0, 0.2, 0.5)
    rng = np.random.default_rng(0)
    base_only = ForkingAnalysis(["a", "b", "c", "d", "e"], {"base": rng.random(5)})
    assert set(report.plots(records, base_only, "-t")) == {"rl-curves-t.png"}
    trained = ForkingAnalysis(["a", "b", "c", "d", "e"],
                              {"base": rng.random(5), "all-seed1": rng.random(5)})  # fmt: skip
    assert set(report.plots(records, trained, "-t")) == {
        "rl-curves-t.png",
        "rl-entropy-histogram-t.png",
        "rl-forks-t.png",
    }


def test_speed_ratios_only_between_runs_timed_on_one_machine(bench):
    """A later session's machine ran 1.5x slower than the one that timed the anchor: a ratio
    across the two would be the machines', not the arms'."""
    _, report = bench

    def speed(method, seconds, machine=None):
        setting = {"rho": 0.2, "task": "countdown", "seeds": [1], "per": "rollout"}
        if machine:
            setting["machine"] = machine
        return {"benchmark": "rl", "method": method, "implementation": "tokensieve",
                "setting": setting, "metric": "seconds_per_step", "value": seconds,
                "unit": "s", "repeats": 10, "spread": 1.0}  # fmt: skip

    records = (_accuracy("all", 1, 0.2, 0.5) + _accuracy("top_entropy", 1, 0.2, 0.5)
               + _accuracy("random", 1, 0.2, 0.4))  # fmt: skip
    same = report.table(records + [speed("all", 20.0), speed("top_entropy", 22.0)])
    assert "22.0 (1.10×)" in same and "machines" not in same
    mixed = report.table(records + [speed("all", 20.0), speed("top_entropy", 33.0, "b2"),
                                    speed("random", 30.0, "b2")])  # fmt: skip
    assert "33.0 (other machine)" in mixed and "30.0 (other machine)" in mixed
    assert "timed on 2 machines (`all`; `top_entropy`, `random`)" in mixed
