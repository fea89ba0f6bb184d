"""Benchmark: lossless speculative decoding on the embedded model, vs transformers.

Prompts (real text, 3 sets): ``docs`` — a passage of a python3.11-doc tutorial page and a
question about it (chat); ``code`` — standard-library functions cut after their
docstring, continued as raw text; ``math`` — the RL tasks' word problems (chat).

Methods, run in the same process on the same prompts, interleaved per prompt in a
rotating order: transformers' greedy ``generate`` (the reference: speed 1.0 and the
output every method must equal) and its prompt lookup (``prompt_lookup_num_tokens=10``);
ours: Token Recycling at several tree sizes, Lookahead Decoding (Jacobi n-grams; N=3, W=4,
G=8), Lookahead with a trie (Ant Group) and prompt lookup.
A drafter is fresh at the start of each round and hot across that round's prompts, as
the Token Recycling authors run it (a resumed run's drafters start afresh where it
resumes). Also measured: the time of one verification forward per number of query
tokens, t(q), which says what a tree must earn back on this CPU.

Run: ``make bench-speculate`` (needs Debian's python3.11-doc). ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import inspect
import re
import statistics
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import Checkpoint, environment_record, median_iqr, record, write_results  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from tokensieve import load_model  # noqa: E402
from tokensieve.lm import end_of_turn_ids  # noqa: E402
from tokensieve.models import EMBEDDED_NAME, with_cache  # noqa: E402
from tokensieve.report.plots import png_bytes  # noqa: E402
from tokensieve.rl.tasks import get_task  # noqa: E402
from tokensieve.speculate import DRAFTERS, speculative_generate  # noqa: E402
from tokensieve.speculate.api import plain_greedy, prompt_ids  # noqa: E402
from tokensieve.speculate.decode import keep_positions, new_cache, verify  # noqa: E402
from tokensieve.speculate.tree import Draft  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
DOC_PAGES = [
    "tutorial/controlflow.rst.txt",
    "tutorial/datastructures.rst.txt",
    "tutorial/errors.rst.txt",
    "tutorial/classes.rst.txt",
    "tutorial/inputoutput.rst.txt",
    "tutorial/modules.rst.txt",
]
DOC_QUESTION = "Explain what the passage above teaches, with its examples."
CODE_FUNCTIONS = [
    "textwrap:indent",
    "heapq:nlargest",
    "shlex:split",
    "fnmatch:filter",
    "string:capwords",
    "bisect:insort_right",
]
MATH = [
    ("arithmetic", 0),
    ("countdown", 0),
    ("arithmetic", 1),
    ("countdown", 1),
    ("compare", 0),
    ("compare", 1),
]
TREE_SIZES = [2, 4, 8, 16, 32, 64]
QUERY_TOKENS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 81]


def doc_passage(page: str, chars: int = 1400) -> str:
    """The first `chars` characters of a page's body (after its title), cut at a line."""
    text = (DOCS / page).read_text(encoding="utf-8")
    body = text.split("\n\n", 2)[-1]
    cut = body[:chars]
    return cut[: cut.rfind("\n")].strip()


def code_prompt(spec: str) -> str:
    """A standard-library function's source up to the end of its docstring."""
    import importlib

    module, name = spec.split(":")
    source = textwrap.dedent(inspect.getsource(getattr(importlib.import_module(module), name)))
    quotes = [m.end() for m in re.finditer(r'"""', source)]
    end = quotes[1] if len(quotes) >= 2 else source.find(":\n") + 2
    return source[:end] + "\n"


def prompt_sets(per_set: int) -> dict[str, list[tuple[str, bool]]]:
    """{set: [(prompt, chat?)]}"""
    return {
        "docs": [(f"{doc_passage(p)}\n\n{DOC_QUESTION}", True) for p in DOC_PAGES[:per_set]],
        "code": [(code_prompt(f), False) for f in CODE_FUNCTIONS[:per_set]],
        "math": [(get_task(t).problem("test", i).prompt, True) for t, i in MATH[:per_set]],
    }


def configs(quick: bool) -> list[dict]:
    sizes = [4, 16] if quick else TREE_SIZES
    ours = [("recycling", n) for n in sizes]
    ours += [("lookahead", 16), ("lookahead_trie", 16), ("prompt_lookup", 10)]
    return [
        {"method": "greedy", "implementation": "transformers", "tree_size": 0},
        {"method": "prompt_lookup", "implementation": "transformers", "tree_size": 10},
        *({"method": m, "implementation": "tokensieve", "tree_size": n} for m, n in ours),
    ]


def label(config: dict) -> str:
    name = f"{config['method']} ({config['implementation']})"
    return name if config["method"] == "greedy" else f"{name}, {config['tree_size']} nodes"


class ForwardCounter:
    """Counts the model's forwards (transformers' generate calls them one by one)."""

    def __init__(self, model):
        self.count = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1


def run_config(model, ids, eos, config, drafters, counter, max_new):
    if config["implementation"] == "transformers":
        extra = {}
        if config["method"] == "prompt_lookup":
            extra = {"prompt_lookup_num_tokens": config["tree_size"]}
        before = counter.count
        result = plain_greedy(model, ids, max_new, eos, **extra)
        return result.tokens, result.seconds, counter.count - before
    name = config["method"].replace("_", "-")  # the registry's (CLI's) spelling
    key = label(config)
    if key not in drafters:
        drafters[key] = DRAFTERS.build(name, tree_size=config["tree_size"])
    result = speculative_generate(model, ids, drafters[key], max_new, eos)
    return result.tokens, result.seconds, result.forwards


def measure(model, tokenizer, sets, cfgs, rounds, max_new, checkpoint) -> list[dict]:
    """One row per (round, prompt, config): tokens, seconds, forwards, identical."""
    eos = end_of_turn_ids(tokenizer)
    counter = ForwardCounter(model)
    rows = []
    jobs = [(r, s, i) for r in range(rounds) for s in sets for i in range(len(sets[s]))]
    drafters: dict = {}
    last_round = None
    for round_, set_name, index in tqdm(jobs, desc="prompts"):
        if round_ != last_round:  # fresh drafters each round, hot within it
            drafters, last_round = {}, round_
        prompt, chat = sets[set_name][index]
        ids = prompt_ids(tokenizer, prompt, chat=chat)
        key = f"{round_}/{set_name}/{index}/{max_new}"

        def cell(ids=ids, index=index, set_name=set_name, round_=round_, drafters=drafters):
            shift = index + round_  # rotate the order: no config always runs first
            order = cfgs[shift % len(cfgs) :] + cfgs[: shift % len(cfgs)]
            found = {}
            for config in order:
                tokens, seconds, forwards = run_config(
                    model, ids, eos, config, drafters, counter, max_new
                )
                found[label(config)] = (config, tokens, seconds, forwards)
            reference = found[label(cfgs[0])][1]
            return [
                {
                    "round": round_,
                    "set": set_name,
                    "prompt": index,
                    **config,
                    "tokens": len(tokens),
                    "seconds": seconds,
                    "forwards": forwards,
                    "identical": tokens == reference,
                    "prompt_tokens": len(ids),
                }
                for config, tokens, seconds, forwards in found.values()
            ]

        rows += checkpoint.cell(key, cell)
    return rows


def forward_costs(model, tokenizer, sets, repeats: int) -> dict[int, list[float]]:
    """t(q): one verification forward of q query tokens (a chain) after a docs prompt."""
    prompt, chat = sets["docs"][0]
    ids = prompt_ids(tokenizer, prompt, chat=chat)
    cache = new_cache(model)
    times: dict[int, list[float]] = {q: [] for q in QUERY_TOKENS}
    with torch.inference_mode():
        prefix = ids[:-1]
        model(input_ids=torch.tensor([prefix]), use_cache=True, **with_cache(cache))
        for _ in range(repeats):
            for q in QUERY_TOKENS:
                draft = Draft.chain(ids[-1], list(range(1000, 1000 + q - 1)))
                started = time.perf_counter()
                verify(model, cache, draft, len(prefix))
                times[q].append((time.perf_counter() - started) * 1e3)
                keep_positions(cache, len(prefix), [])
    return times


def summarise(rows, times, max_new) -> list[dict]:
    setting0 = {
        "model": EMBEDDED_NAME,
        "max_new_tokens": max_new,
        "threads": torch.get_num_threads(),
    }
    records = []
    keys = []
    for row in rows:
        k = (row["method"], row["implementation"], row["tree_size"])
        if k not in keys:
            keys.append(k)
    greedy = {(r["round"], r["set"], r["prompt"]): r for r in rows if r["method"] == "greedy"}
    for prompt_set in ["docs", "code", "math", "all"]:
        for method, implementation, tree_size in keys:
            chosen = [
                r
                for r in rows
                if (r["method"], r["implementation"], r["tree_size"])
                == (method, implementation, tree_size)
                and prompt_set in (r["set"], "all")
            ]
            if not chosen:
                continue
            setting = {**setting0, "tree_size": tree_size, "prompt_set": prompt_set}
            speed = [r["tokens"] / r["seconds"] for r in chosen]
            reference = [greedy[(r["round"], r["set"], r["prompt"])] for r in chosen]
            ratio = [
                s / (g["tokens"] / g["seconds"]) for s, g in zip(speed, reference, strict=True)
            ]
            n = len(chosen)
            speed_median, speed_iqr = median_iqr(speed)
            ratio_median, ratio_iqr = median_iqr(ratio)
            mat = sum(r["tokens"] for r in chosen) / sum(r["forwards"] for r in chosen)
            same = statistics.mean(r["identical"] for r in chosen)
            for metric, value, unit, spread in [
                ("tokens_per_second", speed_median, "tokens/s", speed_iqr),
                ("speedup", ratio_median, "x plain greedy", ratio_iqr),
                ("accepted_per_forward", mat, "tokens per forward", 0.0),
                ("identical_output", same, "fraction of prompts", 0.0),
            ]:
                records.append(
                    record(
                        "speculate", method, implementation, setting, metric, value, unit, n, spread
                    )
                )
    for q, values in times.items():
        med, iqr = median_iqr(values)
        setting = {**setting0, "query_tokens": q}
        records.append(
            record(
                "speculate",
                "verify_forward",
                "tokensieve",
                setting,
                "forward_ms",
                med,
                "ms",
                len(values),
                iqr,
            )
        )
    return records


def _get(records, method, implementation, tree_size, prompt_set, metric):
    for r in records:
        s = r["setting"]
        if (
            (r["method"], r["implementation"], r["metric"]) == (method, implementation, metric)
            and s.get("tree_size") == tree_size
            and s.get("prompt_set") == prompt_set
        ):
            return r
    return None


def table(records, cfgs) -> str:
    lines = [
        "| method | "
        + " | ".join(f"speedup {s}" for s in ["docs", "code", "math", "all"])
        + " | tokens/forward (all) | tokens/s (all) | identical |",
        "|---|" + "---|" * 7,
    ]
    for config in cfgs:
        m, i, n = config["method"], config["implementation"], config["tree_size"]
        cells = []
        for s in ["docs", "code", "math", "all"]:
            r = _get(records, m, i, n, s, "speedup")
            cells.append(f"{r['value']:.2f} (IQR {r['spread']:.2f})" if r else "-")
        mat = _get(records, m, i, n, "all", "accepted_per_forward")
        tps = _get(records, m, i, n, "all", "tokens_per_second")
        same = _get(records, m, i, n, "all", "identical_output")
        lines.append(
            f"| {label(config)} | "
            + " | ".join(cells)
            + f" | {mat['value']:.2f} | {tps['value']:.1f} | {same['value']:.0%} |"
        )
    costs = [r for r in records if r["metric"] == "forward_ms"]
    base = costs[0]["value"]
    lines += [
        "",
        "One verification forward of q query tokens (docs prompt, median):",
        "",
        "| q | " + " | ".join(str(r["setting"]["query_tokens"]) for r in costs) + " |",
        "|---|" + "---|" * len(costs),
        "| ms | " + " | ".join(f"{r['value']:.1f}" for r in costs) + " |",
        "| ÷ t(1) | " + " | ".join(f"{r['value'] / base:.2f}" for r in costs) + " |",
    ]
    return "\n".join(lines) + "\n"


def plots(records, cfgs) -> dict[str, bytes]:
    out = {}
    fig, ax = plt.subplots(figsize=(10, 4.2))
    sets = ["docs", "code", "math"]
    width = 0.8 / len(cfgs)
    colours = plt.get_cmap("tab20").colors
    for k, config in enumerate(cfgs):
        m, i, n = config["method"], config["implementation"], config["tree_size"]
        found = [_get(records, m, i, n, s, "speedup") for s in sets]
        x = np.arange(len(sets)) + (k - len(cfgs) / 2) * width
        ax.bar(
            x,
            [r["value"] for r in found],
            width,
            yerr=[r["spread"] / 2 for r in found],
            label=label(config),
            color=colours[k % len(colours)],
        )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.3, color="#c44e52", lw=0.8, ls="--", label="goal 1.3x (Token Recycling)")
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylabel("tokens/s ÷ plain greedy (median, IQR bar)")
    ax.set_title(f"Lossless speculative decoding on {EMBEDDED_NAME}, 2 CPU threads")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    out["speculate-speedup.png"] = png_bytes(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [c["tree_size"] for c in cfgs if c["method"] == "recycling"]
    mat = [
        _get(records, "recycling", "tokensieve", n, "all", "accepted_per_forward")["value"]
        for n in sizes
    ]
    speed = [_get(records, "recycling", "tokensieve", n, "all", "speedup")["value"] for n in sizes]
    costs = {
        r["setting"]["query_tokens"]: r["value"] for r in records if r["metric"] == "forward_ms"
    }
    q = sorted(costs)
    ax.plot(q, [costs[v] / costs[1] for v in q], "k--", label="cost: t(q) ÷ t(1), q = nodes + 1")
    ax.plot([n + 1 for n in sizes], mat, "o-", label="tokens per forward (Token Recycling)")
    ax.plot([n + 1 for n in sizes], speed, "s-", label="speedup (measured)")
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("query tokens per forward (draft nodes + root)")
    ax.set_ylabel("ratio")
    ax.set_title("A tree pays when tokens per forward beat the forward's cost")
    ax.legend(fontsize=8)
    out["speculate-tree-size.png"] = png_bytes(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-set", type=int, default=4, help="prompts per set")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 prompt per set")
    parser.add_argument("--fresh", action="store_true", help="ignore the resume checkpoint")
    args = parser.parse_args()
    if not DOCS.is_dir():
        raise SystemExit("needs Debian's python3.11-doc (apt-get install python3.11-doc)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    per_set = 1 if args.quick else args.per_set
    rounds = 1 if args.quick else args.rounds
    max_new = 48 if args.quick else args.max_new_tokens
    cfgs = configs(args.quick)
    model, tokenizer = load_model()
    sets = prompt_sets(per_set)
    plain_greedy(model, prompt_ids(tokenizer, "Hello", chat=True), 8, [])  # warm-up
    checkpoint = Checkpoint("speculate-quick" if args.quick else "speculate", fresh=args.fresh)
    rows = measure(model, tokenizer, sets, cfgs, rounds, max_new, checkpoint)
    repeats = 3 if args.quick else 7
    found = checkpoint.cell(
        f"forward-costs/{repeats}",
        lambda: [
            {"q": q, "ms": ms} for q, ms in forward_costs(model, tokenizer, sets, repeats).items()
        ],
    )
    times = {int(row["q"]): row["ms"] for row in found}
    records = [environment_record("speculate", []), *summarise(rows, times, max_new)]
    header = (
        f"# speculate: lossless speculative decoding ({EMBEDDED_NAME}, "
        f"{torch.get_num_threads()} threads, {max_new} new tokens, {per_set} prompts per "
        f"set × {rounds} rounds)\n\nSpeedup = tokens/s ÷ transformers' greedy `generate` "
        "on the same prompt in the same run (median over prompts × rounds, IQR). "
        "Identical = output equal to greedy `generate`, token for token.\n\n"
    )
    if not args.quick:  # a smoke run only prints
        write_results("speculate", records, header + table(records, cfgs), plots(records, cfgs))
    print(table(records, cfgs))


if __name__ == "__main__":
    main()
