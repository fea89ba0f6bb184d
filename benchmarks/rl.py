"""Benchmark: forking-token RLVR on the embedded model, the paper's ablations, vs TRL.

Arms (same task, seeds, step budget and sampling): ``all`` is TRL's own GRPOTrainer,
unchanged (the anchor: every response token carries the gradient); ``top_entropy_trl``
is TRL's own ``top_entropy_quantile=0.2`` flag (the anchor for the paper's method); ours
are ``top_entropy`` (rho 0.2, as the 80/20 authors' code runs it), ``bottom_entropy`` (rho
0.8, the other 80%), ``random`` (rho 0.2, the matched-size control), ``clip_cov`` and
``kl_cov`` (Cui et al.'s covariance methods; Clip-Cov with PPO's clip loosened to [0, 2],
as its recipes), all through `ForkingTokenGRPOTrainer`. TRL's flag divides the loss by all
response tokens (the paper's equation), ours by the selected ones (the 80/20 authors'
code's), so those two arms differ in that and in ties only (the
selections are equal but at ties, where TRL keeps every tied token and ours exactly
⌈ρn⌉; with ``normalize all`` and no ties the losses are equal; both tested). Two tasks,
``arithmetic`` and ``countdown``, two seeds each. Sized for 2 CPU cores with the paper's
recipe scaled down: 40 optimiser steps of 2 prompts × 4 completions of at most 48 tokens,
rollouts of 4 prompts (2 mini-batches per rollout, so updates after the first are
off-policy and clipping and KL-Cov act; at most 384 response tokens per mini-batch, so
Clip-Cov's and KL-Cov's 2e-4 share is their minimum of one token), learning rate 1e-5,
temperature 1, top-p 1.0 (the full distribution, as the paper), the loss averaged over
the selected tokens for the entropy and random masks and over all tokens for the others
(`normalize auto`). Test
accuracy on 64 held-out problems every 10 steps (same sampling, fixed seed). Then the
paper's overlap analysis per task: the base model's greedy test answers scored under the
base and every trained model (entropy histograms, frequent forking tokens, share of the
base model's top-20% positions still top-20%).

Runs live in ``benchmarks/.runs/rl/<task>/<arm>-seed<k>`` (ignored by git); an
interrupted run resumes from its last checkpoint (every 10 steps, on rollout
boundaries), and a finished one keeps ``final/`` and its metrics only. ``--replot``
rebuilds the results from finished runs. A finished run whose directory is gone (another
machine ran it) is taken from the committed ``results/rl.json``, and is not trained
again unless ``--rerun``. Its per-step metrics and its overlap with the base model's
forks are there; its step times and final model are not. So seconds per step (the median
over rollouts of a rollout's time over its steps) are those of the runs present, and the
entropy histograms and frequent forking tokens are of the models present (a task with no
trained model here keeps its committed figures); the table says which seeds were timed.
Speed records carry the timing machine's boot id, and a ratio to TRL's all-token run is
given only where both were timed on one machine (machines here differ in speed by 1.5x).
Run: ``make bench-rl`` (28 runs of 10-35 minutes on 2 cores, resumable across sessions).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from common import RESULTS, ROOT, environment_record, median_iqr, record, write_results

from tokensieve.models import EMBEDDED_NAME
from tokensieve.rl.run import RunConfig, read_metrics, train

RUNS = ROOT / ".runs" / "rl"
TASKS = ["arithmetic", "countdown"]
SEEDS = [0, 1]
# method name in results → (implementation, mask, rho)
ARMS = {
    "all": ("trl", "all", 1.0),
    "top_entropy": ("tokensieve", "top-entropy", 0.2),
    "bottom_entropy": ("tokensieve", "bottom-entropy", 0.8),
    "random": ("tokensieve", "random", 0.2),
    # TRL's own top_entropy_quantile flag: the anchor for the paper's method
    "top_entropy_trl": ("trl", "top-entropy", 0.2),
    "clip_cov": ("tokensieve", "clip-cov", 1.0),
    "kl_cov": ("tokensieve", "kl-cov", 1.0),
}
# Per-arm options of the reference recipes (PRIME-RL's Entropy-Mechanism-of-RL,
# recipe/dapo/7b_clip_cov.sh: clip_ratio_low = clip_ratio_high = 1, i.e. the ratio clipped
# to [0, 2];
# the KL-Cov recipes keep 0.2, and so does every other arm here with clip-higher 0.28).
ARM_OPTIONS = {"clip_cov": {"epsilon": 1.0, "epsilon_high": 1.0}}
# Runs whose step times are not used for speed: the test suite ran beside the arithmetic
# ones on the same 2 cores (stop 10), and the countdown ones were paused (SIGSTOP) while
# tests ran (stop 11), so some of their steps include the pause. Either changes the time
# a step takes, not what it computes.
PERTURBED_TIMING_RUNS = {("arithmetic", "all", 0), ("arithmetic", "top_entropy_trl", 0),
                         ("arithmetic", "top_entropy", 0), ("countdown", "top_entropy_trl", 0),
                         ("countdown", "top_entropy", 0)}  # fmt: skip
MAIN_ARMS = ["all", "top_entropy_trl", "top_entropy", "bottom_entropy", "random", "clip_cov",
             "kl_cov"]  # fmt: skip
# metrics.jsonl key → results metric name (the benchmark format's names)
METRICS = [
    ("test_accuracy", "test_accuracy"),
    ("reward", "train_reward"),
    ("entropy", "mean_entropy"),
    ("tokensieve/selected_fraction", "selected_fraction"),
    ("tokensieve/penalised_fraction", "penalised_fraction"),  # KL-Cov's penalty tokens
]
BUDGET = dict(
    steps=40, group_size=4, prompts_per_step=2, rollout_prompts=4, max_new_tokens=48,
    learning_rate=1e-5, temperature=1.0, top_p=1.0, normalize="auto", save_every=10,
    eval_every=10, eval_problems=64,
)  # fmt: skip


def _machine() -> str:
    """This machine's boot id: times are compared only between runs made on one machine
    (run directories do not move between machines, so the runs present were made here).
    The speed records committed before this key existed were all made on one machine."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "this"


MACHINE = _machine()


def run_dir(task: str, method: str, seed: int) -> Path:
    return RUNS / task / f"{method}-seed{seed}"


def config(task: str, method: str, seed: int) -> RunConfig:
    implementation, mask, rho = ARMS[method]
    return RunConfig(
        task=task, mask=mask, rho=rho, seed=seed, implementation=implementation,
        **{**BUDGET, **ARM_OPTIONS.get(method, {})},
    )  # fmt: skip


def committed_runs() -> set[tuple[str, str, int]]:
    """(task, method, seed) of the runs the committed results hold to the last step."""
    path = RESULTS / "rl.json"
    if not path.exists():
        return set()
    last = BUDGET["steps"]
    return {(r["setting"]["task"], r["method"], r["setting"]["seed"])
            for r in json.loads(path.read_text())
            if r["metric"] == "test_accuracy" and r["setting"].get("step") == last}  # fmt: skip


def train_all(tasks: list[str], methods: list[str], seeds: list[int], rerun: bool = False) -> None:
    """Train every run not finished here, nor (unless `rerun`) in the committed results."""
    done = set() if rerun else committed_runs()
    for seed in seeds:  # seed-major: a first comparison is complete early
        for task in tasks:
            for method in methods:
                out = run_dir(task, method, seed)
                if (out / "final").is_dir() or (task, method, seed) in done:
                    continue
                print(f"== {task} {method} seed {seed} -> {out}", flush=True)
                train(config(task, method, seed), out, progress=True)
                # a finished run needs final/ and its metrics only: its checkpoints (about
                # 1.6 GB each with the optimiser state) filled this machine's disk once
                for checkpoint in out.glob("checkpoint-*"):
                    shutil.rmtree(checkpoint)


def rollout_times(rows: list[dict]) -> list[float]:
    """Seconds per step of each rollout: the first step of a rollout samples it (about 25 s
    here), the next only updates (about 10 s), so a median over single steps lands between
    the two modes wherever the split falls; over whole rollouts it is what a step costs."""
    steps = BUDGET["rollout_prompts"] // BUDGET["prompts_per_step"]
    by_rollout: dict[int, list[float]] = {}
    for row in rows:
        if "step_time" in row:
            by_rollout.setdefault((row["step"] - 1) // steps, []).append(row["step_time"])
    return [sum(times) / steps for times in by_rollout.values() if len(times) == steps]


def records_of_runs(task: str, methods: list[str], seeds: list[int]) -> list[dict]:
    records = []
    for method in methods:
        implementation, _, rho = ARMS[method]
        times, timed = [], []
        for seed in seeds:
            out = run_dir(task, method, seed)
            if not (out / "final").is_dir():
                continue
            rows = read_metrics(out)
            for row in rows:
                setting = {"rho": rho, "step": row["step"], "seed": seed, "task": task,
                           "model": EMBEDDED_NAME}  # fmt: skip
                for key, metric in METRICS:
                    if key in row:
                        unit = "nats" if metric == "mean_entropy" else "fraction"
                        records.append(record("rl", method, implementation, setting, metric,
                                              row[key], unit))  # fmt: skip
            if (task, method, seed) not in PERTURBED_TIMING_RUNS:
                rollouts = rollout_times(rows)
                times += rollouts
                timed += [seed] if rollouts else []
        if times:
            median, spread = median_iqr(times)
            setting = {"rho": rho, "task": task, "model": EMBEDDED_NAME, "seeds": timed,
                       "per": "rollout", "machine": MACHINE}  # fmt: skip
            records.append(record("rl", method, implementation, setting, "seconds_per_step",
                                  median, "s", len(times), spread))  # fmt: skip
    return records


def earlier_records(task: str, methods: list[str], seeds: list[int]) -> list[dict]:
    """The committed results of finished runs whose directories are not on this machine:
    their per-step metrics and overlap records (and an arm's seconds per step where no run
    of it is present to time)."""
    path = RESULTS / "rl.json"
    if not path.exists():
        return []
    finished = {(m, s) for m in methods for s in seeds if (run_dir(task, m, s) / "final").is_dir()}
    present = {m for m, _ in finished}
    kept = []
    for r in json.loads(path.read_text()):
        setting = r["setting"]
        if r["method"] not in methods or setting.get("task") != task:
            continue
        if r["metric"] == "seconds_per_step":
            # only a median over rollouts: the older median over single steps misleads
            if r["method"] not in present and setting.get("per") == "rollout":
                kept.append(r)
        elif setting.get("seed") in seeds and (r["method"], setting["seed"]) not in finished:
            kept.append(r)
    return kept


def analysis_records(task: str, methods: list[str], seeds: list[int]) -> tuple[list[dict], object]:
    from tokensieve.models import load_model
    from tokensieve.rl.analysis import analyse

    base, tokenizer = load_model(None)
    models = {"base": base}
    for method in methods:
        for seed in seeds:
            final = run_dir(task, method, seed) / "final"
            if final.is_dir():
                models[f"{method}-seed{seed}"] = load_model(str(final))[0]
    result = analyse(models, tokenizer, task, problems=32, max_new_tokens=BUDGET["max_new_tokens"])
    records = []
    for name in models:
        if name == "base":
            continue
        method, seed = name.rsplit("-seed", 1)
        setting = {"rho": ARMS[method][2], "seed": int(seed), "task": task,
                   "model": EMBEDDED_NAME, "tokens": len(result.pieces)}  # fmt: skip
        records.append(record("rl", method, ARMS[method][0], setting, "overlap_with_base",
                              result.overlap(name), "fraction"))  # fmt: skip
    return records, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=MAIN_ARMS, choices=list(ARMS))
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--replot", action="store_true", help="results from finished runs only")
    parser.add_argument("--rerun", action="store_true",
                        help="train the runs the committed results hold again too")  # fmt: skip
    args = parser.parse_args()
    if not args.replot:
        train_all(args.tasks, args.methods, args.seeds, args.rerun)
    from rl_report import plots, table

    records = [environment_record("rl", ["tokensieve", "trl", "accelerate"])]
    sections, figures = [], {}
    for task in args.tasks:
        runs = records_of_runs(task, args.methods, args.seeds)
        runs += earlier_records(task, args.methods, args.seeds)
        overlap, analysis = analysis_records(task, args.methods, args.seeds)
        records += runs + overlap
        sections.append(f"## {task}\n\n" + table(runs + overlap, analysis,
                                                  BUDGET["eval_problems"]))  # fmt: skip
        figures.update(plots(runs, analysis, suffix=f"-{task}"))
    markdown = "# rl: forking-token GRPO vs TRL\n\n" + "\n".join(sections)
    write_results("rl", records, markdown, figures)
    print(markdown)


if __name__ == "__main__":
    main()
