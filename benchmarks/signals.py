"""Benchmark: cost of `inspect`'s signal extraction vs a bare forward pass.

Same model (embedded SmolLM2-135M-Instruct), same real text: the Python Language
Reference as the standard library ships it (``pydoc_data.topics``), cut to N tokens.

- ``bare_forward``: one forward pass over the N tokens (default attention, logits only),
  the least any per-token analysis must do.
- ``inspect``: `text_signals`, i.e. chunked forward through a KV cache with the library's
  registered chunked attention function (it reduces each layer's attention as it goes,
  instead of materialising eager attention's weights), and the four distribution
  statistics.
- ``inspect`` with ``attention: false``: the same without attention signals.

Timings interleave the methods and report medians with interquartile ranges.
Peak memory is the process's peak resident set during one run (Linux VmHWM, reset
before each method), with the RSS before the run given in the setting.

Run: ``make bench-signals`` (``--fresh`` ignores the resume checkpoint).
"""

from __future__ import annotations

import argparse
import io
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    Checkpoint,
    environment_record,
    median_iqr,
    record,
    reset_peak,
    rss_mb,
    write_results,
)
from tqdm.auto import tqdm  # noqa: E402

from tokensieve import load_model, text_signals  # noqa: E402
from tokensieve.models import model_display_name  # noqa: E402


def real_text() -> str:
    """The Python Language Reference pages shipped in the standard library."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics))


def methods(model, tokenizer, ids: torch.Tensor, text: str, tokens: int):
    def bare():
        with torch.no_grad():
            model(input_ids=ids[None])

    def inspect(attention: bool):
        return lambda: text_signals(model, tokenizer, text, max_tokens=tokens, attention=attention)

    return {
        ("bare_forward", None): bare,
        ("inspect", True): inspect(True),
        ("inspect", False): inspect(False),
    }


def measure(model, tokenizer, text: str, tokens: int, repeats: int, checkpoint: Checkpoint):
    name = model_display_name(model)
    key = f"{name}/{tokens}/{repeats}"
    if (done := checkpoint.get(key)) is not None:
        print(f"resume: {tokens} tokens already measured")
        return done
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    if len(ids) < tokens:
        raise SystemExit(f"text has only {len(ids)} tokens")
    text = tokenizer.decode(ids)  # only the measured part, so both read the same text
    ids = torch.tensor(ids)
    runs = methods(model, tokenizer, ids, text, tokens)
    for run in runs.values():  # warm-up
        run()
    times: dict = {k: [] for k in runs}
    for _ in tqdm(range(repeats), desc=f"{tokens} tokens", unit="round"):
        for k, run in runs.items():
            start = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - start)
    memory = {}
    for k, run in runs.items():
        before = rss_mb("VmRSS")
        reset_peak()
        run()
        memory[k] = (rss_mb("VmHWM"), before)

    records = []
    for (method, attention), seconds in times.items():
        setting = {"tokens": tokens, "model": name, "threads": torch.get_num_threads()}
        if attention is not None:
            setting["attention"] = attention
        med, spread = median_iqr(seconds)
        speed = [tokens / s for s in seconds]
        speed_med, speed_spread = median_iqr(speed)
        records.append(
            record(
                "signals",
                method,
                "tokensieve",
                setting,
                "tokens_per_second",
                speed_med,
                "tokens/s",
                repeats,
                speed_spread,
            )
        )
        records.append(
            record("signals", method, "tokensieve", setting, "seconds", med, "s", repeats, spread)
        )
        if method == "inspect":
            ratios = [s / b for s, b in zip(seconds, times[("bare_forward", None)], strict=True)]
            ratio_med, ratio_spread = median_iqr(ratios)
            records.append(
                record(
                    "signals",
                    method,
                    "tokensieve",
                    setting,
                    "overhead_ratio",
                    ratio_med,
                    "inspect / bare_forward time",
                    repeats,
                    ratio_spread,
                )
            )
        peak, before = memory[(method, attention)]
        records.append(
            record(
                "signals",
                method,
                "tokensieve",
                {**setting, "rss_before_mb": round(before)},
                "peak_memory_mb",
                peak,
                "MB",
                1,
                0.0,
            )
        )
    checkpoint.put(key, records)
    return records


def label(r: dict) -> str:
    if r["method"] == "inspect":
        return "inspect" + ("" if r["setting"].get("attention", True) else " (no attention)")
    return r["method"]


def table(records: list[dict]) -> str:
    rows = {}
    for r in records:
        if r["metric"] == "environment":
            continue
        rows.setdefault((r["setting"]["tokens"], label(r)), {})[r["metric"]] = r
    env = next(r["setting"] for r in records if r["metric"] == "environment")
    lines = [
        "# signals: `inspect` vs a bare forward pass",
        "",
        f"Model {records[1]['setting']['model']}, real text (Python Language Reference, "
        f"pydoc_data), CPU {env['machine']}, torch {env['torch']}, transformers "
        f"{env['transformers']}. Medians over repeats, ± interquartile range.",
        "",
        "| tokens | method | tokens/s | seconds | overhead ratio | peak memory (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for (tokens, name), m in sorted(rows.items()):
        tps, sec = m["tokens_per_second"], m["seconds"]
        ratio = m.get("overhead_ratio")
        ratio_text = f"{ratio['value']:.2f} ± {ratio['spread']:.2f}" if ratio else "1.00"
        mem = m["peak_memory_mb"]
        lines.append(
            f"| {tokens} | {name} | {tps['value']:.0f} ± {tps['spread']:.0f} | "
            f"{sec['value']:.2f} ± {sec['spread']:.2f} | {ratio_text} | "
            f"{mem['value']:.0f} (before: {mem['setting']['rss_before_mb']}) |"
        )
    return "\n".join(lines) + "\n"


def plot(records: list[dict]) -> bytes:
    speed = [r for r in records if r["metric"] == "tokens_per_second"]
    sizes = sorted({r["setting"]["tokens"] for r in speed})
    names = ["bare_forward", "inspect (no attention)", "inspect"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [
            next(r["value"] for r in speed if label(r) == name and r["setting"]["tokens"] == n)
            for n in sizes
        ]
        errors = [
            next(r["spread"] for r in speed if label(r) == name and r["setting"]["tokens"] == n)
            for n in sizes
        ]
        ax.bar([x + i * width for x in range(len(sizes))], values, width, yerr=errors, label=name)
    ax.set_xticks([x + width for x in range(len(sizes))], [f"{n} tokens" for n in sizes])
    ax.set_ylabel("tokens per second (median)")
    ax.set_title(f"signal extraction vs bare forward ({speed[0]['setting']['model']}, CPU)")
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None, help="model spec (default: embedded)")
    parser.add_argument("--fresh", action="store_true", help="ignore the resume checkpoint")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model)
    text = real_text()
    checkpoint = Checkpoint("signals", fresh=args.fresh)
    records = [environment_record("signals", ["tokensieve"])]
    for tokens in args.tokens:
        records += measure(model, tokenizer, text, tokens, args.repeats, checkpoint)
    markdown = table(records)
    write_results("signals", records, markdown, {"signals-throughput.png": plot(records)})
    print(markdown)


if __name__ == "__main__":
    main()
