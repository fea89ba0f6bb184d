"""Benchmark: forking-token RLVR on the embedded model, the paper's ablations, vs TRL.

Arms (same task, seeds, step budget and sampling): ``all`` is TRL's own GRPOTrainer,
unchanged (the anchor: every response token carries the gradient); ours are
``top_entropy`` (rho 0.2, the paper's recipe), ``bottom_entropy`` (rho 0.8, the other 80%)
and ``random`` (rho 0.2, the matched-size control), all through
`ForkingTokenGRPOTrainer`. Sized for 2 CPU cores: the ``arithmetic`` task, 40 steps of
2 prompts × 4 completions of at most 48 tokens, learning rate 1e-5, temperature 1 with
top-p 0.9; test accuracy on 64 held-out problems at steps 0, 20 and 40 (same sampling,
fixed seed). Then the paper's overlap analysis: the base model's greedy test answers
scored under the base and every trained model (entropy histograms, frequent forking
tokens, share of the base model's top-20% positions still top-20%).

Runs live in ``benchmarks/.runs/rl/<arm>-seed<k>`` (ignored by git); an interrupted
run resumes from its last checkpoint (every 5 steps). ``--replot`` rebuilds the results
from finished runs. Run: ``make bench-rl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ROOT, environment_record, median_iqr, record, write_results

from tokensieve.models import EMBEDDED_NAME
from tokensieve.rl.run import RunConfig, read_metrics, train

RUNS = ROOT / ".runs" / "rl"
TASK = "arithmetic"
SEEDS = [0, 1]
# method name in results → (implementation, mask, rho)
ARMS = {
    "all": ("trl", "all", 1.0),
    "top_entropy": ("tokensieve", "top-entropy", 0.2),
    "bottom_entropy": ("tokensieve", "bottom-entropy", 0.8),
    "random": ("tokensieve", "random", 0.2),
    # TRL's own top_entropy_quantile flag: the anchor for the paper's method
    "top_entropy_trl": ("trl", "top-entropy", 0.2),
}
MAIN_ARMS = ["all", "top_entropy", "bottom_entropy", "random"]
ANCHOR_ARMS = ["top_entropy", "top_entropy_trl"]
# metrics.jsonl key → results metric name (the benchmark format's names)
METRICS = [
    ("test_accuracy", "test_accuracy"),
    ("reward", "train_reward"),
    ("entropy", "mean_entropy"),
    ("tokensieve/selected_fraction", "selected_fraction"),
]
BUDGET = dict(
    steps=40, group_size=4, prompts_per_step=2, max_new_tokens=48, learning_rate=1e-5,
    temperature=1.0, top_p=0.9, save_every=5, eval_every=20, eval_problems=64,
)  # fmt: skip


def run_dir(method: str, seed: int) -> Path:
    return RUNS / f"{method}-seed{seed}"


def config(method: str, seed: int) -> RunConfig:
    implementation, mask, rho = ARMS[method]
    return RunConfig(
        task=TASK, mask=mask, rho=rho, seed=seed, implementation=implementation, **BUDGET
    )


def train_all(methods: list[str], seeds: list[int]) -> None:
    for seed in seeds:  # seed-major: a first comparison is complete early
        for method in methods:
            out = run_dir(method, seed)
            if (out / "final").is_dir():
                continue
            print(f"== {method} seed {seed} -> {out}", flush=True)
            train(config(method, seed), out, progress=True)


def records_of_runs(methods: list[str], seeds: list[int]) -> list[dict]:
    records = []
    for method in methods:
        implementation, _, rho = ARMS[method]
        times = []
        for seed in seeds:
            out = run_dir(method, seed)
            if not (out / "final").is_dir():
                continue
            for row in read_metrics(out):
                setting = {"rho": rho, "step": row["step"], "seed": seed, "task": TASK,
                           "model": EMBEDDED_NAME}  # fmt: skip
                for key, metric in METRICS:
                    if key in row:
                        unit = "nats" if metric == "mean_entropy" else "fraction"
                        records.append(record("rl", method, implementation, setting, metric,
                                              row[key], unit))  # fmt: skip
                if "step_time" in row:
                    times.append(row["step_time"])
        if times:
            median, spread = median_iqr(times)
            setting = {"rho": rho, "task": TASK, "model": EMBEDDED_NAME, "seeds": seeds}
            records.append(record("rl", method, implementation, setting, "seconds_per_step",
                                  median, "s", len(times), spread))  # fmt: skip
    return records


def analysis_records(methods: list[str], seeds: list[int]) -> tuple[list[dict], object]:
    from tokensieve.models import load_model
    from tokensieve.rl.analysis import analyse

    base, tokenizer = load_model(None)
    models = {"base": base}
    for method in methods:
        for seed in seeds:
            final = run_dir(method, seed) / "final"
            if final.is_dir():
                models[f"{method}-seed{seed}"] = load_model(str(final))[0]
    result = analyse(models, tokenizer, TASK, problems=32, max_new_tokens=BUDGET["max_new_tokens"])
    records = []
    for name in models:
        if name == "base":
            continue
        method, seed = name.rsplit("-seed", 1)
        setting = {"rho": ARMS[method][2], "seed": int(seed), "task": TASK,
                   "model": EMBEDDED_NAME, "tokens": len(result.pieces)}  # fmt: skip
        records.append(record("rl", method, ARMS[method][0], setting, "overlap_with_base",
                              result.overlap(name), "fraction"))  # fmt: skip
    return records, result


def anchor_stage(seeds: list[int], train: bool = True) -> None:
    """tokensieve's `top-entropy` mask and TRL's `top_entropy_quantile` flag, same seeds
    and budget, in one run; records marked ``stage: anchor``, merged into rl.json."""
    from common import RESULTS
    from rl_report import anchor_table

    if train:
        train_all(ANCHOR_ARMS, seeds)
    fresh = records_of_runs(ANCHOR_ARMS, seeds)
    for r in fresh:
        r["setting"]["stage"] = "anchor"
    saved = json.loads((RESULTS / "rl.json").read_text())
    kept = [r for r in saved if r["setting"].get("stage") != "anchor"]
    markdown = (RESULTS / "rl.md").read_text().split("\n## tokensieve vs TRL's flag")[0]
    section = anchor_table(fresh, BUDGET["eval_problems"])
    write_results("rl", kept + fresh, markdown.rstrip() + "\n\n" + section, {})
    print(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=MAIN_ARMS, choices=list(ARMS))
    parser.add_argument("--stage", choices=("main", "anchor"), default="main",
                        help="anchor: tokensieve's top-entropy mask vs TRL's own "
                        "top_entropy_quantile flag, merged into the saved results")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--replot", action="store_true", help="results from finished runs only")
    args = parser.parse_args()
    if args.stage == "anchor":
        anchor_stage(args.seeds, train=not args.replot)
        return
    if not args.replot:
        train_all(args.methods, args.seeds)
    from rl_report import plots, table

    records = [environment_record("rl", ["tokensieve", "trl", "accelerate"])]
    records += records_of_runs(args.methods, args.seeds)
    overlap, analysis = analysis_records(args.methods, args.seeds)
    records += overlap
    markdown = table(records, analysis, BUDGET["eval_problems"])
    write_results("rl", records, markdown, plots(records, analysis))
    print(markdown)
    print(json.dumps(analysis.summary(), ensure_ascii=False)[:2000])


if __name__ == "__main__":
    main()
