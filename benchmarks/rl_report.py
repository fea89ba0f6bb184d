"""Table and plots of the RL benchmark, rebuilt from its JSON records."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from tokensieve.rl import plots as rl_plots
from tokensieve.rl.analysis import ForkingAnalysis


def runs_from_records(records: list[dict]) -> dict[str, list[dict]]:
    """``{"<arm>-seed<k>": [{"step": s, <metrics.jsonl key>: value}, ...]}``."""
    keys = {"test_accuracy": "test_accuracy", "train_reward": "reward", "mean_entropy": "entropy",
            "selected_fraction": "tokensieve/selected_fraction",
            "penalised_fraction": "tokensieve/penalised_fraction"}  # fmt: skip
    rows: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in records:
        if r["metric"] in keys and "step" in r["setting"]:
            name = f"{r['method']}-seed{r['setting']['seed']}"
            step = r["setting"]["step"]
            rows[name].setdefault(step, {"step": step})[keys[r["metric"]]] = r["value"]
    return {name: [by_step[s] for s in sorted(by_step)] for name, by_step in rows.items()}


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def table(records: list[dict], analysis: ForkingAnalysis | None = None, problems: int = 64) -> str:
    """The results table; `problems`: test problems per evaluation (for the noise line)."""
    runs = runs_from_records(records)
    arms = list(dict.fromkeys(name.rpartition("-seed")[0] for name in runs))
    speed = {r["method"]: r for r in records if r["metric"] == "seconds_per_step"}
    overlap = defaultdict(list)
    for r in records:
        if r["metric"] == "overlap_with_base":
            overlap[r["method"]].append(r["value"])
    anchor = speed.get("all", {}).get("value")
    anchor_machine = _machine(speed["all"]) if anchor else None
    lines = [
        "| arm | implementation | rho | test acc. step 0 | "
        "final test acc. (per seed, in seed order) | Δ final − step 0 | "
        "train reward, first 10 → last 10 rollouts | "
        "entropy, first → last step | share trained on | s / step (× TRL) | "
        "overlap with base forks |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    implementation = {r["method"]: r["implementation"] for r in records if "method" in r}
    rho = {r["method"]: r["setting"].get("rho") for r in records if "rho" in r["setting"]}
    # in seed order, as the "per seed" column lists them
    by_seed = sorted(runs, key=lambda n: int(n.rpartition("-seed")[2]))
    for arm in arms:
        mine = {n: runs[n] for n in by_seed if n.rpartition("-seed")[0] == arm}
        starts, finals, first, last, e0, e1, share, penalised = [], [], [], [], [], [], [], []
        for rows in mine.values():
            accuracy = [r for r in rows if "test_accuracy" in r]
            if accuracy:
                starts.append(accuracy[0]["test_accuracy"])
                finals.append(accuracy[-1]["test_accuracy"])
            rewards = [r["reward"] for r in rows if "reward" in r]
            first.append(_mean(rewards[:10]))
            last.append(_mean(rewards[-10:]))
            entropy = [r["entropy"] for r in rows if "entropy" in r]
            if entropy:
                e0.append(entropy[0])
                e1.append(entropy[-1])
            share += [r["tokensieve/selected_fraction"] for r in rows
                      if "tokensieve/selected_fraction" in r]  # fmt: skip
            penalised += [r["tokensieve/penalised_fraction"] for r in rows
                          if "tokensieve/penalised_fraction" in r]  # fmt: skip
        seconds = speed.get(arm, {}).get("value")
        ratio = ""
        if seconds and anchor:
            same = _machine(speed[arm]) == anchor_machine
            ratio = f" ({seconds / anchor:.2f}×)" if same else " (other machine)"
        lines.append(
            f"| {arm} | {implementation.get(arm, '')} | {rho.get(arm, '')} | {_mean(starts):.3f} "
            f"| {' / '.join(f'{v:.3f}' for v in finals)} (mean {_mean(finals):.3f}) "
            f"| {_mean(finals) - _mean(starts):+.3f} | {_mean(first):.3f} → {_mean(last):.3f} "
            f"| {_mean(e0):.3f} → {_mean(e1):.3f} | {_share(arm, share, rho.get(arm), penalised)} "
            f"| {_seconds(seconds, ratio)} | {_mean(overlap.get(arm, [])):.3f} |"
        )
    out = "\n".join(lines) + "\n" + _against_anchor(runs, arms, problems)
    timed = sorted({seed for r in speed.values() for seed in r["setting"].get("seeds", [])})
    if timed:
        out += (f"- s / step: median over the rollouts (a rollout's time over its steps) of "
                f"the runs of seed {', '.join(map(str, timed))} whose timing was not "
                f"perturbed\n")  # fmt: skip
    machines = defaultdict(list)
    for arm, r in speed.items():
        machines[_machine(r)].append(arm)
    if len(machines) > 1:
        # another session's machine ran at another speed: ratios only within one machine
        groups = "; ".join(", ".join(f"`{a}`" for a in arms) for arms in machines.values())
        out += (f"- timed on {len(machines)} machines ({groups}); × TRL only where TRL's "
                f"all-token run was timed on the same machine\n")  # fmt: skip
    if analysis is not None:
        forks = ", ".join(f"`{w}` {c}" for w, c in analysis.frequent_forks("base", 12))
        out += f"\nBase model's most frequent forking tokens (top {analysis.rho:.0%}): {forks}\n"
    return out


def _machine(speed_record: dict) -> str:
    """Which machine timed a record (the records from before the key: one earlier one)."""
    return speed_record["setting"].get("machine", "earlier")


def _seconds(seconds: float | None, ratio: str) -> str:
    """Median seconds per step; n/a where no run of the arm was timed cleanly (perturbed:
    `benchmarks/rl.py`'s PERTURBED_TIMING_RUNS; or its directory is gone and the committed
    results hold no per-rollout time). A time from another machine than the anchor's is
    shown, with "other machine" in place of the ratio."""
    return f"{seconds:.1f}{ratio}" if seconds else "n/a (not timed here)"


def _share(arm: str, share: list[float], rho, penalised: list[float]) -> str:
    """Share of tokens trained on: logged by our trainer; TRL's all-token run trains on
    every token; TRL's flag does not log it. KL-Cov adds the range of its penalised share
    (per step, of the mini-batch's response tokens)."""
    if share and penalised:
        return f"{_mean(share):.2f} (penalty on {min(penalised):.1%}–{max(penalised):.1%})"
    if share:
        return f"{_mean(share):.2f}"
    return "1.00" if arm == "all" else f"n/a (≈ {rho})"


def _finals(runs: dict[str, list[dict]], arm: str) -> dict[int, tuple[float, float]]:
    """{seed: (step-0, final) test accuracy} of `arm`'s finished seeds."""
    pairs = {}
    for name, rows in runs.items():
        method, _, seed = name.rpartition("-seed")
        accuracy = [r["test_accuracy"] for r in rows if "test_accuracy" in r]
        if method == arm and len(accuracy) > 1:
            pairs[int(seed)] = (accuracy[0], accuracy[-1])
    return pairs


def _paired(ours: dict[int, tuple], theirs: dict[int, tuple]) -> tuple[float, float, str]:
    """Mean final accuracy of two arms over the seeds both have finished (a comparison on
    different seeds would mix the seed-to-seed spread into the ratio), and which seeds."""
    seeds = sorted(set(ours) & set(theirs))
    note = "" if len(seeds) == len(theirs) else f" (seed {', '.join(map(str, seeds))} only)"
    return (_mean([ours[s][1] for s in seeds]), _mean([theirs[s][1] for s in seeds]), note)


def _against_anchor(runs: dict[str, list[dict]], arms: list[str], problems: int) -> str:
    """Ours / TRL's all-token run on the same seeds, and the noise to read it against."""
    finals = {arm: _finals(runs, arm) for arm in arms}
    anchor = finals.get("all")
    if not anchor:
        return ""
    lines = ["", "Final test accuracy, mean over the seeds both arms finished, ours / TRL "
             "all-token GRPO:"]  # fmt: skip
    for arm, pairs in finals.items():
        if arm != "all" and set(pairs) & set(anchor):
            ours, theirs, note = _paired(pairs, anchor)
            ratio = f"{ours / theirs:.2f}" if theirs else "n/a"
            lines.append(f"- `{arm}` {ours:.3f} vs {theirs:.3f} ({ratio}){note}")
    flag, mine = finals.get("top_entropy_trl"), finals.get("top_entropy")
    if flag and mine and set(flag) & set(mine):
        ours, trl, note = _paired(mine, flag)
        ratio = ours / trl if trl else math.nan
        lines.append(f"- tokensieve `top_entropy` vs TRL's `top_entropy_quantile` flag: "
                     f"{ours:.3f} vs {trl:.3f} ({ratio:.2f}){note}")  # fmt: skip
    starts = [s for pairs in finals.values() for s, _ in pairs.values()]
    ends = [f for pairs in finals.values() for _, f in pairs.values()]
    p = _mean(ends)
    error = math.sqrt(p * (1 - p) / problems)
    seeds = max(len(pairs) for pairs in finals.values())
    lines.append(
        f"- noise: step-0 accuracy (the same base model, each seed's sampling) ranges "
        f"{min(starts):.3f}–{max(starts):.3f}; at the mean final accuracy p = {p:.2f} one "
        f"binomial standard error over {problems} problems is {error:.3f}, so a difference "
        f"of two arms' means over {seeds} seed(s) has a standard error of "
        f"{error * math.sqrt(2 / seeds):.3f} from the test sample alone"
    )
    # training's own seed-to-seed spread, measured: the same arm's two seeds differ by this
    gaps = []
    for pairs in finals.values():
        values = [final for _, final in pairs.values()]
        gaps += [abs(a - b) for a, b in zip(values, values[1:], strict=False)]
    if gaps:
        lines.append(
            f"- seed-to-seed: the same arm's final accuracy differs between seeds by "
            f"{statistics.median(gaps):.3f} (median over {len(gaps)} arms; largest "
            f"{max(gaps):.3f}), test sample and training together"
        )
    return "\n".join(lines) + "\n"


def plots(records: list[dict], analysis: ForkingAnalysis | None = None,
          suffix: str = "") -> dict[str, bytes]:  # fmt: skip
    figures = {f"rl-curves{suffix}.png": rl_plots.curves(runs_from_records(records))}
    # the histograms and forks are of the models on this machine; with none but the base
    # (every run taken from the committed results) the committed figures, drawn when the
    # models were here, say more than a base-only redraw would, so they are kept
    if analysis is not None and len(analysis.entropy) > 1:
        figures[f"rl-entropy-histogram{suffix}.png"] = rl_plots.entropy_histograms(analysis)
        figures[f"rl-forks{suffix}.png"] = rl_plots.forks(analysis)
    return figures
