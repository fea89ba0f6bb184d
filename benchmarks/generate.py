"""Benchmark: controlled generation, ours vs genlm-control, on the embedded model.

Tasks (same prompts, same constraint functions for both libraries):
- ``iso_date``: regular expression ``[0-9]{4}-[0-9]{2}-[0-9]{2}``;
- ``wordlist``: every word must be in Debian's ``wamerican`` list (/usr/share/dict/words);
- ``lipogram``: a sentence without the letter "e";
- ``json_person``: a small JSON schema (name and age);
- ``capital``: one of seven capital names, small enough to enumerate every valid
  completion, so sampled distributions are compared with the exact conditional.

Methods: ours ``masking`` (every token checked), ``awrs`` (1 particle) and ``smc``
(5, 10 particles); genlm-control's ``AWRS`` token sampler with its ``smc`` (1, 5, 10
particles); ``llguidance`` masking (our masking sampler fed llguidance's full-vocabulary
token mask, one mask computation per token, counted as one check) where the constraint
is a regex or schema. genlm-control sees the constraint through a byte-level `Potential` that
calls the very same Python check, counted the same way, so checks per token compare
the samplers, not the constraint engines.

Run: ``make bench-generate`` (installs genlm-control 0.4.1 and Debian's wamerican).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import time
from functools import lru_cache, partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import Checkpoint, environment_record, median_iqr, record, write_results  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from tokensieve import load_model  # noqa: E402
from tokensieve.generate import (  # noqa: E402
    AWRSSampler,
    LLGuidanceConstraint,
    MaskingSampler,
    PredicateConstraint,
    RegexConstraint,
    TokenLM,
    run_smc,
)
from tokensieve.generate.api import prompt_ids  # noqa: E402
from tokensieve.models import EMBEDDED_NAME, converted_gguf, embedded_model_file  # noqa: E402

WORDS = Path("/usr/share/dict/words")
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
CAPITALS_PATTERN = (
    "(" + "|".join(("Paris", "London", "Rome", "Berlin", "Madrid", "Lisbon", "Vienna")) + ")"
)
# The same constraint as llguidance grammars, for its full-vocabulary token masks.
LLGUIDANCE = {
    "iso_date": lambda: LLGuidanceConstraint.from_regex(ISO_DATE),
    "capital": lambda: LLGuidanceConstraint.from_regex(CAPITALS_PATTERN),
    "json_person": lambda: LLGuidanceConstraint.from_json_schema(PERSON_SCHEMA),
}


@lru_cache(maxsize=1)
def word_sets() -> tuple[frozenset, frozenset]:
    words = {w.strip().lower() for w in WORDS.read_text(encoding="utf-8").split() if w.isalpha()}
    prefixes = {w[:i] for w in words for i in range(1, len(w) + 1)}
    return frozenset(words), frozenset(prefixes)


def every_word_in_list(text: str, complete: bool) -> bool:
    """Letters form words of the list; other characters are limited to simple punctuation."""
    words, prefixes = word_sets()
    if any(not (ch.isalpha() and ch.isascii()) and ch not in " ,.'" for ch in text):
        return False
    pieces = text.replace(",", " ").replace(".", " ").replace("'", " ").split(" ")
    last_open = not complete and text and text[-1].isalpha()
    for index, piece in enumerate(pieces):
        if not piece:
            continue
        final = index == len(pieces) - 1 and last_open
        if (piece.lower() not in prefixes) if final else (piece.lower() not in words):
            return False
    return not complete or (len(text.split()) >= 3 and text.endswith("."))


def lipogram(text: str, complete: bool) -> bool:
    """No letter e; a complete answer is one sentence of at least four words."""
    if "e" in text.lower() or "\n" in text:
        return False
    return not complete or (text.endswith(".") and len(text.split()) >= 4)


TASKS = {
    "iso_date": (
        "Give me a date in ISO format (YYYY-MM-DD). Answer with the date only.",
        lambda: RegexConstraint(ISO_DATE),
        16,
    ),
    "wordlist": (
        "Write one short sentence about the sea.",
        lambda: PredicateConstraint(every_word_in_list, name="wordlist"),
        24,
    ),
    "lipogram": (
        "Write one short sentence about a cat without using the letter e.",
        lambda: PredicateConstraint(lipogram, name="lipogram"),
        24,
    ),
    "json_person": (
        "Describe a person as JSON with a name and an age.",
        lambda: LLGuidanceConstraint.from_json_schema(PERSON_SCHEMA),
        32,
    ),
    "capital": (
        "Name one European capital city. Answer with the name only.",
        lambda: RegexConstraint(CAPITALS_PATTERN),
        6,
    ),
}


class Counted:
    """Wraps a constraint and counts its checks (both libraries call through this)."""

    def __init__(self, constraint):
        self.constraint = constraint
        self.calls = 0

    def prefix(self, data: bytes) -> bool:
        self.calls += 1
        return self.constraint.prefix(data)

    def complete(self, data: bytes) -> bool:
        self.calls += 1
        return self.constraint.complete(data)


def run_ours(model, tokenizer, task, method, particles, seed, llguidance=False):
    prompt, make, max_tokens = TASKS[task]
    constraint = LLGUIDANCE[task]() if llguidance else Counted(make())
    lm = TokenLM(model, tokenizer, prompt_ids(tokenizer, prompt))
    sampler = MaskingSampler() if method == "masking" else AWRSSampler()
    result = run_smc(
        lm,
        constraint,
        sampler,
        particles=particles,
        max_tokens=max_tokens,
        resample=method == "smc",
        seed=seed,
    )
    return {
        "checks": result.checks if llguidance else constraint.calls,
        "tokens": result.tokens,
        "seconds": result.seconds,
        "posterior": result.distribution(),
        "log_marginal": result.log_marginal,
    }


class GenlmRun:
    """genlm-control's AWRS + SMC on the same cached model directory and prompt."""

    def __init__(self, tokenizer):
        from genlm.control import PromptedLLM

        directory = str(converted_gguf(embedded_model_file()))
        self.tokenizer = tokenizer
        self.llm = PromptedLLM.from_name(directory, backend="hf", eos_tokens=[b"<|im_end|>"])

    def run(self, task, particles, seed):
        from genlm.control import AWRS, Potential

        prompt, make, max_tokens = TASKS[task]
        counted = Counted(make())

        class Condition(Potential):
            def __init__(self):
                super().__init__(list(range(256)))

            async def prefix(self, context):
                return 0.0 if counted.prefix(bytes(context)) else float("-inf")

            async def complete(self, context):
                return 0.0 if counted.complete(bytes(context)) else float("-inf")

        self.llm.prompt_ids = prompt_ids(self.tokenizer, prompt)
        sampler = AWRS(self.llm, Condition().coerce(self.llm, f=b"".join), seed=seed)
        started = time.perf_counter()
        sequences = asyncio.run(
            sampler.smc(n_particles=particles, ess_threshold=0.5, max_tokens=max_tokens)
        )
        seconds = time.perf_counter() - started
        tokens = sum(len(context) for context in sequences.contexts)
        posterior = {}
        for text, weight in sequences.decoded_posterior.items():
            posterior[text] = posterior.get(text, 0.0) + float(weight)
        return {
            "checks": counted.calls,
            "tokens": tokens,
            "seconds": seconds,
            "posterior": posterior,
            "log_marginal": float(sequences.log_ml),
        }


def exact_distribution(model, tokenizer, task) -> dict[str, float]:
    """Every constrained token path of the `capital` task, probabilities multiplied out."""
    prompt, make, max_tokens = TASKS[task]
    constraint = make()
    lm = TokenLM(model, tokenizer, prompt_ids(tokenizer, prompt))
    allowed_first = [t for t in range(lm.vocab_size) if not lm.forbidden[t] and lm.token_bytes[t]]
    mass: dict[str, float] = {}

    def walk(path, data, log_p):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([lm.prompt_ids + path])).logits[0, -1]
        logp = torch.log_softmax(logits.double(), -1).numpy()
        if constraint.complete(data):
            for eos in lm.eos_ids:
                text = data.decode()
                mass[text] = mass.get(text, 0.0) + math.exp(log_p + logp[eos])
        if len(path) + 1 >= max_tokens:
            return
        for token in allowed_first:
            extended = data + lm.token_bytes[token]
            if constraint.prefix(extended):
                walk(path + [token], extended, log_p + logp[token])

    walk([], b"", 0.0)
    total = sum(mass.values())
    return {k: v / total for k, v in mass.items()}


def tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def kl(estimate: dict, exact: dict) -> float:
    """KL(estimate ‖ exact): finite because samples only land on valid strings."""
    return sum(p * math.log(p / exact[k]) for k, p in estimate.items() if p > 0)


def add_record(cell, method, implementation, setting, repeats, metric, value, unit, spread=0.0):
    cell.append(
        record("generate", method, implementation, setting, metric, value, unit, repeats, spread)
    )


METHODS = [  # (implementation, method, particles)
    ("tokensieve", "masking", 1),
    ("llguidance", "masking", 1),
    ("tokensieve", "awrs", 1),
    ("tokensieve", "smc", 5),
    ("tokensieve", "smc", 10),
    ("genlm-control", "awrs", 1),
    ("genlm-control", "smc", 5),
    ("genlm-control", "smc", 10),
]


def measure(args, model, tokenizer, genlm, checkpoint):
    records = []
    cells = [
        (t, *m) for t in args.tasks for m in METHODS if m[0] != "llguidance" or t in LLGUIDANCE
    ]
    for task, implementation, method, particles in tqdm(cells, desc="cells"):
        repeats = args.exact_runs if task == "capital" else args.repeats
        key = f"{task}/{implementation}/{method}/{particles}/{repeats}"
        if (done := checkpoint.get(key)) is not None:
            records += done
            continue
        runs = []
        for seed in range(repeats):
            if implementation in ("tokensieve", "llguidance"):
                runs.append(
                    run_ours(
                        model,
                        tokenizer,
                        task,
                        method,
                        particles,
                        seed,
                        llguidance=implementation == "llguidance",
                    )
                )
            else:
                runs.append(genlm.run(task, particles, seed))
        setting = {"task": task, "particles": particles, "model": EMBEDDED_NAME}
        cell: list[dict] = []
        add = partial(add_record, cell, method, implementation, setting, repeats)

        for metric, unit, values in (
            ("checks_per_token", "checks/token", [r["checks"] / max(r["tokens"], 1) for r in runs]),
            ("ms_per_token", "ms/token", [1000 * r["seconds"] / max(r["tokens"], 1) for r in runs]),
        ):
            med, spread = median_iqr(values)
            add(metric, med, unit, spread)
        check = TASKS[task][1]()
        valid = [
            any(w > 0 and check.complete(t.encode()) for t, w in r["posterior"].items())
            for r in runs
        ]
        add("valid_fraction", float(np.mean(valid)), "fraction of runs with a valid completion")
        if task == "capital":
            pooled: dict[str, float] = {}
            for r in runs:
                for text, weight in r["posterior"].items():
                    pooled[text] = pooled.get(text, 0.0) + weight / len(runs)
            total = sum(pooled.values()) or 1.0
            pooled = {k: v / total for k, v in pooled.items()}
            add("tv_to_exact", tv(pooled, args.exact), "total variation")
            add("kl_to_exact", kl(pooled, args.exact), "nats, KL(sampled ‖ exact)")
        checkpoint.put(key, cell)
        records += cell
    return records


def table(records) -> str:
    env = next(r["setting"] for r in records if r["metric"] == "environment")
    rows: dict = {}
    for r in records:
        if r["metric"] == "environment" or r["setting"].get("stage") == "estimators":
            continue
        key = (r["setting"]["task"], r["implementation"], r["method"], r["setting"]["particles"])
        rows.setdefault(key, {})[r["metric"]] = r
    lines = [
        "# generate: controlled generation, tokensieve vs genlm-control",
        "",
        f"Model {EMBEDDED_NAME} (CPU), torch {env['torch']}, transformers "
        f"{env['transformers']}, genlm-control {env['genlm-control']}. Medians over seeds "
        "± interquartile range; checks are calls of the same constraint function.",
        "",
        "| task | implementation | method | particles | checks/token | ms/token | valid "
        "| TV to exact | KL to exact |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (task, impl, method, particles), m in rows.items():
        c, t = m["checks_per_token"], m["ms_per_token"]
        exact = (
            (f"{m['tv_to_exact']['value']:.3f}", f"{m['kl_to_exact']['value']:.3f}")
            if "tv_to_exact" in m
            else ("", "")
        )
        lines.append(
            f"| {task} | {impl} | {method} | {particles} | {c['value']:.1f} ± {c['spread']:.1f} "
            f"| {t['value']:.1f} ± {t['spread']:.1f} | {m['valid_fraction']['value']:.2f} "
            f"| {exact[0]} | {exact[1]} |"
        )
    lines += ["", "Ratios (tokensieve ÷ genlm-control, same task, method and particles):", ""]
    lines += [
        "| task | method | particles | checks ratio | time ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for (task, impl, method, particles), m in rows.items():
        theirs = rows.get((task, "genlm-control", method, particles))
        if impl != "tokensieve" or theirs is None:
            continue
        lines.append(
            f"| {task} | {method} | {particles} | "
            f"{m['checks_per_token']['value'] / theirs['checks_per_token']['value']:.2f} | "
            f"{m['ms_per_token']['value'] / theirs['ms_per_token']['value']:.2f} |"
        )
    return "\n".join(lines) + "\n" + estimator_table(records)


def plots(records) -> dict[str, bytes]:
    out = {}
    data = [r for r in records if r["metric"] in ("checks_per_token", "ms_per_token")
            and r["setting"].get("stage") != "estimators"]  # fmt: skip
    tasks = list(dict.fromkeys(r["setting"]["task"] for r in data))
    labels = [f"{impl} {method} ×{particles}" for impl, method, particles in METHODS]
    for metric, title in (
        ("checks_per_token", "constraint checks per token"),
        ("ms_per_token", "milliseconds per token"),
    ):
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(METHODS)
        for j, (impl, method, particles) in enumerate(METHODS):
            values = []
            for task in tasks:
                match = [
                    r["value"]
                    for r in data
                    if r["metric"] == metric
                    and r["setting"]["task"] == task
                    and r["implementation"] == impl
                    and r["method"] == method
                    and r["setting"]["particles"] == particles
                ]
                values.append(match[0] if match else 0)
            ax.bar(
                [x + j * width for x in range(len(tasks))],
                values,
                width,
                label=labels[j],
                hatch="//" if impl == "genlm-control" else None,
            )
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(tasks))], tasks)
        ax.set_yscale("log")
        ax.set_ylabel(title + " (log)")
        ax.set_title(f"{title}: tokensieve vs genlm-control ({EMBEDDED_NAME})")
        ax.legend(fontsize=7, ncol=2)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        out[f"generate-{metric.replace('_', '-')}.png"] = buffer.getvalue()
    if any(r["setting"].get("stage") == "estimators" for r in records):
        out["generate-estimators.png"] = estimator_plot(records)
    return out


# --- AWRS weight estimators: the paper's two loops vs genlm-control's recursive and
# geometric ones, on the model's real next-token distributions along a valid answer.
ESTIMATORS = [("recursive", 2), ("paper", 2), ("geometric", 3)]


def answer_contexts(model, tokenizer, task, limit=8):
    """``(log_probs, allowed, exact allowed mass)`` at the first `limit` steps of the
    answer that takes the likeliest allowed token at each step."""
    prompt, make, _ = TASKS[task]
    constraint = make()
    lm = TokenLM(model, tokenizer, prompt_ids(tokenizer, prompt))
    log_probs, data, contexts = lm.start(1)[0], b"", []
    for _ in range(limit):
        masked = log_probs.copy()
        masked[lm.forbidden] = -np.inf

        def allowed(v, data=data):
            if v in lm.eos_ids:
                return constraint.complete(data)
            return constraint.prefix(data + lm.token_bytes[v])

        passing = [int(v) for v in np.flatnonzero(np.isfinite(masked)) if allowed(int(v))]
        if not passing:
            break
        contexts.append((masked, allowed, float(np.exp(masked[passing]).sum())))
        token = max(passing, key=lambda v: masked[v])
        if token in lm.eos_ids:
            break
        data += lm.token_bytes[token]
        log_probs = lm.step([token])[0]
    return contexts


def measure_estimators(model, tokenizer, tasks, draws, checkpoint):
    records = []
    for task in tqdm(tasks, desc="estimators"):
        key = f"estimators/{task}/{draws}"
        if (done := checkpoint.get(key)) is not None:
            records += done
            continue
        contexts = answer_contexts(model, tokenizer, task)
        cell = []
        for estimator, accepts in ESTIMATORS:
            sampler = AWRSSampler(accepts=accepts, estimator=estimator)
            checks, spreads, ratios = [], [], []
            for masked, allowed, exact in contexts:
                rng = np.random.default_rng(0)
                found = [sampler.sample(masked, allowed, rng) for _ in range(draws)]
                weights = np.array([math.exp(d.log_weight) for d in found])
                checks.append(np.mean([d.checks for d in found]))
                spreads.append(weights.std() / max(weights.mean(), 1e-300))
                ratios.append(weights.mean() / exact)
            setting = {"task": task, "particles": 1, "model": EMBEDDED_NAME,
                       "stage": "estimators", "estimator": estimator, "accepts": accepts,
                       "contexts": len(contexts), "draws_per_context": draws}  # fmt: skip
            add = partial(add_record, cell, f"awrs-{estimator}", "tokensieve", setting, draws)
            med, spread = median_iqr(checks)
            add("checks_per_token", med, "checks/token (median over steps)", spread)
            med, spread = median_iqr(spreads)
            add("weight_relative_spread", med, "std/mean of the weight (median over steps)",
                spread)  # fmt: skip
            med, spread = median_iqr(ratios)
            add("weight_mean_ratio", med, "mean weight ÷ exact allowed mass", spread)
        checkpoint.put(key, cell)
        records += cell
    return records


def estimator_table(records) -> str:
    rows = [r for r in records if r["setting"].get("stage") == "estimators"]
    if not rows:
        return ""
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["setting"]["task"], r["setting"]["estimator"]), {})[r["metric"]] = r
    first = rows[0]["setting"]
    lines = [
        "",
        "## AWRS weight estimators",
        "",
        f"At each of the first {first['contexts']} or fewer steps of one valid answer per "
        f"task (the model's real next-token distributions), {first['draws_per_context']} "
        "draws per estimator; medians over steps ± IQR. `paper`: the paper's two loops; "
        "`recursive` (our default) and `geometric` (3 accepts): genlm-control's later "
        "estimators. A mean-weight ratio near 1 is the unbiasedness check against the "
        "exact allowed mass.",
        "",
        "| task | estimator | checks/token | relative spread of w | mean w ÷ exact |",
        "|---|---|---:|---:|---:|",
    ]
    for (task, estimator), m in cells.items():
        c, w, q = m["checks_per_token"], m["weight_relative_spread"], m["weight_mean_ratio"]
        lines.append(
            f"| {task} | {estimator} | {c['value']:.2f} ± {c['spread']:.2f} "
            f"| {w['value']:.2f} ± {w['spread']:.2f} | {q['value']:.3f} ± {q['spread']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def estimator_plot(records) -> bytes:
    rows = [r for r in records if r["setting"].get("stage") == "estimators"]
    tasks = list(dict.fromkeys(r["setting"]["task"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(ESTIMATORS)
    panels = ((axes[0], "checks_per_token", "checks per token"),
              (axes[1], "weight_relative_spread", "relative spread of w"))  # fmt: skip
    for ax, metric, title in panels:
        for j, (estimator, _) in enumerate(ESTIMATORS):
            found = {(r["setting"]["task"], r["setting"]["estimator"]): r["value"]
                     for r in rows if r["metric"] == metric}  # fmt: skip
            values = [found.get((t, estimator), 0) for t in tasks]
            ax.bar([x + j * width for x in range(len(tasks))], values, width, label=estimator)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(tasks))], tasks, fontsize=8)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"AWRS weight estimators on {EMBEDDED_NAME}", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exact-runs", type=int, default=20)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--replot", action="store_true", help="redraw from the saved JSON")
    parser.add_argument("--stage", choices=("all", "samplers", "estimators"), default="all",
                        help="estimators: only the AWRS estimator comparison, merged into "
                        "the saved results")  # fmt: skip
    parser.add_argument("--estimator-draws", type=int, default=400)
    args = parser.parse_args()
    if args.replot:
        import json

        from common import RESULTS

        records = json.loads((RESULTS / "generate.json").read_text())
        write_results("generate", records, table(records), plots(records))
        return
    if not WORDS.is_file():
        raise SystemExit(f"{WORDS} is missing: install Debian's wamerican (make bench-generate)")
    torch.manual_seed(0)
    model, tokenizer = load_model()
    checkpoint = Checkpoint("generate", fresh=args.fresh)
    if args.stage == "estimators":
        import json

        from common import RESULTS

        kept = [r for r in json.loads((RESULTS / "generate.json").read_text())
                if r["setting"].get("stage") != "estimators"]  # fmt: skip
        records = kept + measure_estimators(model, tokenizer, args.tasks,
                                            args.estimator_draws, checkpoint)  # fmt: skip
        write_results("generate", records, table(records), plots(records))
        print(estimator_table(records))
        return
    genlm = GenlmRun(tokenizer)
    args.exact = exact_distribution(model, tokenizer, "capital") if "capital" in args.tasks else {}
    print("exact capital distribution:", {k: round(v, 4) for k, v in args.exact.items()})
    records = [environment_record("generate", ["tokensieve", "genlm-control", "llguidance"])]
    records += measure(args, model, tokenizer, genlm, checkpoint)
    if args.stage == "all":
        records += measure_estimators(model, tokenizer, args.tasks, args.estimator_draws,
                                      checkpoint)  # fmt: skip
    markdown = table(records)
    write_results("generate", records, markdown, plots(records))
    print(markdown)


if __name__ == "__main__":
    main()
