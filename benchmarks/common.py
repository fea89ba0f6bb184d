"""Shared plumbing for benchmark scripts: records, medians, resume, writing results.

Results follow the project's benchmark format: a JSON list of records, one per figure, plus an
`environment` record, a Markdown table and PNG plots under benchmarks/results/.
Finished cells are appended to a JSON-lines checkpoint so an interrupted run resumes.
"""

from __future__ import annotations

import json
import platform
import statistics
from importlib import metadata
from pathlib import Path

from tokensieve.outputs import write_atomic

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CHECKPOINTS = ROOT / ".cache"


def rss_mb(field: str) -> float:
    """A memory figure of this process from /proc (VmRSS, VmHWM = peak), in MiB (/proc's
    "kB" are KiB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Start VmHWM (the peak RSS) afresh from now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def median_iqr(values: list[float]) -> tuple[float, float]:
    """Median and interquartile range (0 spread for fewer than 2 values)."""
    if len(values) < 2:
        return float(values[0]), 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return float(statistics.median(values)), float(q3 - q1)


def record(benchmark, method, implementation, setting, metric, value, unit, repeats=1, spread=0.0):
    return {
        "benchmark": benchmark,
        "method": method,
        "implementation": implementation,
        "setting": setting,
        "metric": metric,
        "value": value,
        "unit": unit,
        "repeats": repeats,
        "spread": spread,
    }


def environment_record(benchmark: str, packages: list[str]) -> dict:
    versions = {"python": platform.python_version(), "machine": platform.machine()}
    for name in ["torch", "transformers", *packages]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return record(benchmark, "environment", "tokensieve", versions, "environment", None, "")


class Checkpoint:
    """Append-only JSON-lines store of finished cells, keyed by a string."""

    def __init__(self, name: str, fresh: bool = False):
        self.path = CHECKPOINTS / f"{name}.jsonl"
        if fresh:
            self.path.unlink(missing_ok=True)
        self.done: dict[str, list[dict]] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption
                    continue
                self.done[entry["key"]] = entry["records"]

    def get(self, key: str) -> list[dict] | None:
        return self.done.get(key)

    def cell(self, key: str, compute) -> list[dict]:
        """The records of a finished cell, else `compute()`'s, saved before returning."""
        found = self.get(key)
        if found is None:
            found = compute()
            self.put(key, found)
        return found

    def put(self, key: str, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "records": records}) + "\n")
        self.done[key] = records


def write_results(name: str, records: list[dict], markdown: str, plots: dict[str, bytes]) -> None:
    write_atomic(RESULTS / f"{name}.json", json.dumps(records, indent=1) + "\n")
    write_atomic(RESULTS / f"{name}.md", markdown)
    for filename, png in plots.items():
        write_atomic(RESULTS / filename, png)
