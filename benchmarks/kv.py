"""Benchmark: KV-cache compression, our policies vs kvpress's presses, same model and inputs.

Real text from Debian's ``python3.11-doc`` (the reStructuredText sources of the Python
documentation), the embedded SmolLM2-135M-Instruct, and in the same run kvpress 0.5.5
in its own venv (``benchmarks/.venvs/kvpress``: it pins transformers 5.2), driven by
``kv_press_worker.py`` on the same model directory and the same token ids.

1. Fidelity: the first 1024 tokens of two documentation pages are read (the prompt
   the policy compresses), then the next 64 tokens of each are fed one by one; at each
   step the next-token distribution is compared with our full cache's: perplexity,
   KL(full ‖ compressed), top-1 agreement. Budgets 10/20/30/50% of the prompt.
2. Passkey: a random 5-digit key hidden at depths 0.1–0.9 in tutorial pages, 20 cases
   per cell, the prompt ending "The secret passkey is", correct if the greedy digits
   equal the key; 20% budget. Query-aware (the question read with the context): every
   method at 1k tokens; at 2k and 4k only the methods whose prefill costs what a plain
   forward does (H2O, Keyformer, SirLLM, ObservedAttention and KVzip need every query's
   attention, all logits or a second pass; Keyformer alone takes about 3 minutes a case
   at 4k). Query-agnostic (the context compressed alone, the question appended after, as
   kvpress's pipeline): every policy and press at 1k, 2k and 4k (phases ``agnostic1k``
   to ``agnostic4k``). Phase ``selection``: TokenSelect's fidelity and query-aware
   passkey with its sparse prefill and its selection cache.
3. Speed and memory: decode tokens/s (median over steps) and the decode phase's peak
   RSS after prefilling 1k-8k tokens, full cache vs 20%, each cell in a fresh process.

4. Streaming past the context window (StreamingLLM's Figure 3): 4 × 8,192 tokens of the
   library reference read in chunks of 32 through a 1,024-token cache, perplexity per
   1,024 tokens read: sinks + window re-rotated, window without sinks, sinks + window at
   original positions, and the full cache reading each 8,192-token window alone.

5. Multi-turn conversations (SirLLM's setting): 12 conversations of 6 turns × 300 tokens
   of the tutorial, one cache across turns, 20% budget; even turns state a fact, odd
   turns ask for it; accuracy per asking turn and the peak number of slots kept.

Run: ``make bench-kv`` (``--phases stream multiturn --merge`` reruns those rows alone).
Finished cells go to ``benchmarks/.cache/kv.jsonl``; an interrupted run resumes there
(``--fresh`` starts over, ``--replot`` redraws).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    CHECKPOINTS,
    RESULTS,
    ROOT,
    Checkpoint,
    environment_record,
    median_iqr,
    record,
    reset_peak,
    rss_mb,
    write_results,
)
from tqdm.auto import tqdm  # noqa: E402

from tokensieve import load_model  # noqa: E402
from tokensieve.kv import CompressedCache, compression, make_policy  # noqa: E402
from tokensieve.kv.fidelity import compare, teacher_forced_logits  # noqa: E402
from tokensieve.kv.passkey import answer_digits, make_passkey_case  # noqa: E402
from tokensieve.models import (  # noqa: E402
    EMBEDDED_NAME,
    converted_gguf,
    embedded_model_file,
    with_cache,
)

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
PRESS_PYTHON = ROOT / ".venvs" / "kvpress" / "bin" / "python"
WORKER = ROOT / "kv_press_worker.py"

OURS = ["streaming", "h2o", "keyformer", "sirllm", "snapkv", "tova", "random", "tokenselect",
        "tidaldecode"]  # fmt: skip
PRESSES = ["streaming_llm", "snapkv", "observed_attention", "tova", "expected_attention",
           "kvzip", "decoding"]  # fmt: skip
BUDGETS = [0.1, 0.2, 0.3, 0.5]
FIDELITY_PAGES = ["library/functions.rst.txt", "library/stdtypes.rst.txt"]
FIDELITY_CONTEXT, FIDELITY_DECODE = 1024, 64
PASSKEY_BUDGET, PASSKEY_CASES, PASSKEY_NEW = 0.2, 20, 8
DEPTHS = [0.1, 0.3, 0.5, 0.7, 0.9]
SELECTION_VARIANTS = ["tokenselect_sparse", "tokenselect_reuse"]  # both prefills; selection cache
PASSKEY_METHODS = {  # context → (ours, presses); "full" is the ceiling
    1024: (["full", *OURS, *SELECTION_VARIANTS], PRESSES[:-1]),
    2048: (["full", "streaming", "snapkv", "tova", "tokenselect", "tidaldecode",
            *SELECTION_VARIANTS], ["streaming_llm", "snapkv", "tova", "expected_attention"]),
    4096: (["full", "streaming", "snapkv"], ["streaming_llm", "snapkv"]),
}  # fmt: skip
AGNOSTIC_METHODS = {  # query-agnostic: every policy and press at each context (issue 16),
    # and StreamingLLM re-rotated to ranks on both sides (ours: pos_shift; kvpress:
    # KeyRerotationPress(StreamingLLMPress))
    n: (["full", *OURS, "streaming_rerotated"], [*PRESSES[:-1], "streaming_llm_rerotated"])
    for n in (1024, 2048, 4096)
}
MODES = ("aware", "agnostic")
SPEED_CONTEXTS, SPEED_DECODE, SPEED_BUDGET = [1024, 2048, 4096, 8192], 24, 0.2
SPEED_OURS = ["full", *OURS, *SELECTION_VARIANTS]
SPEED_PRESSES = ["none", *PRESSES]  # every press; decoding: per-step eviction, like for like
SPEED_METRICS = ("decode_tokens_per_second", "peak_memory_mb", "prefill_seconds")
REUSE_THRESHOLD = 0.9  # TokenSelect's reference value (its selection cache is off there)
# streaming past the window: StreamingLLM's Figure 3 curves on 4 windows of real text
SINK_TOKENS = 1024  # the first tokens of the stream, read once to measure the sink's share
STREAM_WINDOWS, STREAM_BUDGET, STREAM_CHUNK, STREAM_REPORT = 4, 1024, 32, 1024
STREAM_CURVES = [  # (label, sink, pos_shift)
    ("sinks + window, re-rotated", 4, True),
    ("window without sinks, re-rotated", 0, True),
    ("sinks + window, original positions", 4, False),
]
# multi-turn: conversations alternating a fact and a question about it (SirLLM's setting)
MULTITURN_CASES, MULTITURN_TURNS, MULTITURN_TOKENS, MULTITURN_BUDGET = 12, 6, 300, 0.2
MULTITURN_ANSWER = 8  # tokens answered per asking turn (tokensieve.kv.multiturn's default)
MULTITURN_METHODS = ["full", *OURS, "sirllm_after_input"]


def _agnostic(context: int):
    return lambda r: (r["metric"] == "passkey_accuracy" and r["setting"].get("mode") == "agnostic"
                      and r["setting"]["context_tokens"] == context)  # fmt: skip


FIDELITY_METRICS = ("perplexity", "kl_to_full", "top1_agreement", "kv_bytes")


def _sirllm_aware(r) -> bool:  # SirLLM's query-aware rows, rerun after its timing changed
    return (r["method"] == "sirllm" and r["implementation"] == "tokensieve"
            and ((r["metric"] in FIDELITY_METRICS and "pages" in r["setting"])
                 or (r["metric"] == "passkey_accuracy"
                     and r["setting"].get("mode", "aware") == "aware")))  # fmt: skip


def _speed(r) -> bool:
    return r["metric"] in SPEED_METRICS or (r["metric"] == "kv_bytes"
                                            and "pages" not in r["setting"])  # fmt: skip


def _selection(r) -> bool:  # TokenSelect's fidelity and query-aware passkey rows
    if not r["method"].startswith("tokenselect"):
        return False
    if r["metric"] in FIDELITY_METRICS:
        return "pages" in r["setting"]
    return r["metric"] == "passkey_accuracy" and r["setting"].get("mode", "aware") == "aware"


PHASE_ROWS = {  # phases --merge can rerun alone, and the rows each one writes
    "speed": _speed,
    "selection": _selection,
    "stream": lambda r: r["metric"] in ("stream_perplexity", "sink_attention_share"),
    "sirllm": _sirllm_aware,
    "multiturn": lambda r: r["metric"] in ("multiturn_accuracy", "multiturn_peak_kept"),
    **{f"agnostic{n // 1024}k": _agnostic(n) for n in AGNOSTIC_METHODS},
}


def pages(pattern: str) -> str:
    files = sorted(DOCS.glob(pattern))
    if not files:
        raise SystemExit(f"no {DOCS}/{pattern}: install Debian's python3.11-doc (make bench-kv)")
    return "\n\n".join(f.read_text() for f in files)


def policy_for(name: str, budget: float, reserve: int | None = None):
    if name == "full":
        return make_policy("full")
    if name == "streaming_rerotated":  # the same policy; the cache re-rotates (pos_shift)
        return make_policy("streaming", budget=budget)
    if name == "sirllm" and reserve is not None:  # room for the answer, made before the question
        return make_policy(name, budget=budget, reserve=reserve)
    if name == "tokenselect_sparse":  # per-chunk selection in the prefill too
        return make_policy("tokenselect", budget=budget, prefill="sparse")
    if name == "tokenselect_reuse":  # the selection cache on
        return make_policy("tokenselect", budget=budget, reuse_threshold=REUSE_THRESHOLD)
    return make_policy(name, budget=budget)


def run_worker(job: dict) -> dict:
    """Run one kvpress job in kvpress's venv; its log stays in benchmarks/.cache."""
    work = CHECKPOINTS / "kvpress"
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{job['kind']}-{job['press']}-{job['ratio']}-{job.get('context', '')}"
    tag += f"-{job['mode']}" if job.get("mode", "aware") != "aware" else ""
    job_file, result_file, log = work / f"{tag}.job.json", work / f"{tag}.json", work / f"{tag}.log"
    job_file.write_text(json.dumps(job))
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    with log.open("w") as out:
        done = subprocess.run(
            [str(PRESS_PYTHON), str(WORKER), str(job_file), str(result_file)],
            stdout=out, stderr=subprocess.STDOUT, env=env, check=False,
        )  # fmt: skip
    if done.returncode:
        tail = log.read_text().strip().splitlines()[-3:]
        raise SystemExit(f"kvpress worker failed ({tag}): {' | '.join(tail)}")
    return json.loads(result_file.read_text())


class Bench:
    def __init__(self, args):
        self.args = args
        self.model, self.tokenizer = load_model()
        self.model_dir = str(converted_gguf(embedded_model_file()))
        self.checkpoint = Checkpoint("kv", fresh=args.fresh)
        self.records: list[dict] = []

    def cell(self, key: str, compute) -> None:
        self.records += self.checkpoint.cell(key, compute)

    def setting(self, budget, context, **extra) -> dict:
        return {"budget": budget, "context_tokens": context, "model": EMBEDDED_NAME, **extra}

    # 4. streaming past the context window ----------------------------------------------
    def stream(self) -> None:
        from tokensieve.kv.stream import stream_perplexity, window_perplexity

        limit = self.model.config.max_position_embeddings
        ids = self.tokenizer(pages("library/*.rst.txt"), add_special_tokens=False)["input_ids"]
        ids = torch.tensor(ids[: STREAM_WINDOWS * limit + 1])
        base = {"model": EMBEDDED_NAME, "context_tokens": len(ids), "window": limit,
                "chunk": STREAM_CHUNK, "text": "python3.11-doc library/*.rst.txt"}  # fmt: skip

        def rows(method, values, tokens_read, **setting):
            return [record("kv", method, "tokensieve", {**base, **setting, "tokens_read": n},
                           "stream_perplexity", v, "perplexity")
                    for n, v in zip(tokens_read, values, strict=True)]  # fmt: skip

        def reference():
            values = window_perplexity(self.model, ids, STREAM_REPORT, limit)
            read = [STREAM_REPORT * (i + 1) + 1 for i in range(len(values))]
            return rows(
                "full",
                values,
                read,
                budget=1.0,
                pos_shift=None,
                sink=None,
                curve="in-window reference (full cache, each window read alone)",
            )

        self.cell(f"stream/full/{len(ids)}", reference)
        for label, sink, shift in tqdm(STREAM_CURVES, desc="stream"):

            def curve(label=label, sink=sink, shift=shift):
                policy = make_policy("streaming", budget=STREAM_BUDGET, sink=sink)
                started = time.perf_counter()
                result = stream_perplexity(self.model, ids, policy, shift, STREAM_CHUNK,
                                           STREAM_REPORT, progress=True)  # fmt: skip
                seconds = time.perf_counter() - started
                return rows(
                    "streaming",
                    result.window_perplexity,
                    result.tokens_read,
                    budget=STREAM_BUDGET,
                    sink=sink,
                    pos_shift=shift,
                    curve=label,
                    seconds=round(seconds, 1),
                    max_position=result.max_position,
                )

            self.cell(f"stream/{sink}/{shift}/{len(ids)}", curve)
        self.cell(f"stream/sink-share/{SINK_TOKENS}", lambda: self.sink_share(ids[:SINK_TOKENS]))

    def sink_share(self, ids) -> list[dict]:
        """How much each layer leans on the first token (the sink StreamingLLM keeps): its
        attention weight, mean over heads and the query rows past the first 128."""
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            with torch.no_grad():
                out = self.model(input_ids=ids[None].to(self.model.device), output_attentions=True)
        finally:
            self.model.set_attn_implementation(previous)
        setting = {"model": EMBEDDED_NAME, "context_tokens": len(ids), "rows_from": 128,
                   "text": "python3.11-doc library/*.rst.txt"}  # fmt: skip
        return [record("kv", "full", "tokensieve", {**setting, "layer": i},
                       "sink_attention_share", float(a[0, :, 128:, 0].mean()), "fraction")
                for i, a in enumerate(out.attentions)]  # fmt: skip

    # 5. multi-turn conversations ----------------------------------------------------------
    def multiturn(self) -> None:
        from tokensieve.kv.multiturn import make_conversation, turn_accuracy

        text = pages("tutorial/*.rst.txt")
        conversations = [make_conversation(self.tokenizer, text, MULTITURN_TURNS,
                                           MULTITURN_TOKENS, seed=i)
                         for i in range(MULTITURN_CASES)]  # fmt: skip
        base = {"model": EMBEDDED_NAME, "conversations": MULTITURN_CASES,
                "turns": MULTITURN_TURNS, "turn_tokens": MULTITURN_TOKENS,
                "budget": MULTITURN_BUDGET,
                "text": "python3.11-doc tutorial/*.rst.txt"}  # fmt: skip
        for method in tqdm(MULTITURN_METHODS, desc="multi-turn"):

            def compute(method=method):
                if method == "full":
                    policy = None
                elif method.startswith("sirllm"):  # room for the 8-token answer, no more
                    timing = "after input" if method == "sirllm_after_input" else "before input"
                    policy = make_policy("sirllm", budget=MULTITURN_BUDGET, timing=timing,
                                         reserve=MULTITURN_ANSWER)  # fmt: skip
                else:
                    policy = make_policy(method, budget=MULTITURN_BUDGET)
                runs = []
                started = time.perf_counter()
                accuracy = turn_accuracy(self.model, self.tokenizer, conversations, policy,
                                         progress=True, runs=runs)  # fmt: skip
                seconds = (time.perf_counter() - started) / len(conversations)
                setting = {**base, "seconds_per_conversation": round(seconds, 1)}
                rows = [record("kv", method, "tokensieve", {**setting, "turn": turn},
                               "multiturn_accuracy", value, "fraction", len(conversations))
                        for turn, value in accuracy.items()]  # fmt: skip
                budgets = [run.budget for run in runs if run.budget is not None]
                setting = {**setting, "budget_tokens": max(budgets) if budgets else None}
                rows.append(record("kv", method, "tokensieve", setting, "multiturn_peak_kept",
                                   max(run.peak_kept for run in runs), "tokens",
                                   len(conversations)))  # fmt: skip
                return rows

            reserve = f"/reserve{MULTITURN_ANSWER}" if method.startswith("sirllm") else ""
            self.cell(f"multiturn/{method}/{MULTITURN_CASES}{reserve}", compute)

    # 1. fidelity -------------------------------------------------------------------
    def fidelity(self, only: list[str] | None = None) -> None:
        segments = []
        for page in FIDELITY_PAGES:
            ids = self.tokenizer((DOCS / page).read_text(), add_special_tokens=False)["input_ids"]
            segments.append(ids[: FIDELITY_CONTEXT + FIDELITY_DECODE + 1])
        references = [self.reference(i, ids) for i, ids in enumerate(segments)]
        targets = [torch.tensor(ids[FIDELITY_CONTEXT:]) for ids in segments]
        cells = [("tokensieve", m, b) for m in OURS for b in BUDGETS]
        cells += [("kvpress", "none", 1.0)]
        cells += [("kvpress", p, b) for p in PRESSES for b in BUDGETS]
        if self.args.skip_kvpress:
            cells = [c for c in cells if c[0] == "tokensieve"]
        if only is not None:
            cells = [c for c in cells if c[0] == "tokensieve" and c[1] in only]
        for impl, method, budget in tqdm(cells, desc="fidelity"):

            def compute(impl=impl, method=method, budget=budget):
                logits, kv_bytes = [], []
                for i, ids in enumerate(segments):
                    if impl == "tokensieve":
                        policy = policy_for(method, budget)
                        rows, cache = teacher_forced_logits(
                            self.model, torch.tensor(ids), FIDELITY_CONTEXT, policy
                        )
                        kv_bytes.append(cache.kv_bytes())
                    else:
                        out = CHECKPOINTS / f"kvpress-logits-{i}.pt"
                        result = run_worker(
                            self.job("fidelity", method, budget, ids=ids,
                                     context=FIDELITY_CONTEXT, logits_out=str(out))
                        )  # fmt: skip
                        rows = torch.load(out)
                        out.unlink()
                        kv_bytes.append(result["kv_bytes"])
                    logits.append(rows)
                ppl, kl, top1 = compare(
                    torch.cat(references), torch.cat(logits), torch.cat(targets)
                )
                setting = self.setting(
                    budget, FIDELITY_CONTEXT, decoded=sum(len(t) for t in targets),
                    pages=FIDELITY_PAGES,
                )  # fmt: skip
                steps = sum(len(t) for t in targets)
                return [
                    record("kv", method, impl, setting, "perplexity", ppl, "", steps),
                    record("kv", method, impl, setting, "kl_to_full", kl, "nats", steps),
                    record("kv", method, impl, setting, "top1_agreement", top1, "fraction", steps),
                    record("kv", method, impl, setting, "kv_bytes", statistics.mean(kv_bytes),
                           "bytes", len(kv_bytes)),
                ]  # fmt: skip

            self.cell(f"fidelity/{impl}/{method}/{budget}", compute)
        if only is not None:
            return
        full = self.setting(1.0, FIDELITY_CONTEXT, decoded=sum(len(t) for t in targets))
        ppl, _, _ = compare(torch.cat(references), torch.cat(references), torch.cat(targets))
        self.records.append(record("kv", "full", "tokensieve", full, "perplexity", ppl, "", 1))

    def reference(self, index: int, ids: list[int]) -> torch.Tensor:
        path = CHECKPOINTS / f"kv-reference-{index}-{len(ids)}.pt"
        if path.is_file() and not self.args.fresh:
            return torch.load(path)
        rows, _ = teacher_forced_logits(self.model, torch.tensor(ids), FIDELITY_CONTEXT)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(rows, path)
        return rows

    def job(self, kind, press, budget, **extra) -> dict:
        return {"model_dir": self.model_dir, "kind": kind, "press": press,
                "ratio": round(1 - budget, 6), **extra}  # fmt: skip

    # 2. passkey --------------------------------------------------------------------
    def passkey(self, context: int, mode: str = "aware", only: list[str] | None = None) -> None:
        haystack = pages("tutorial/*.rst.txt")
        cases = [
            make_passkey_case(self.tokenizer, haystack, context, DEPTHS[i % len(DEPTHS)], i)
            for i in range(PASSKEY_CASES)
        ]
        agnostic = mode == "agnostic"
        ours, presses = (AGNOSTIC_METHODS if agnostic else PASSKEY_METHODS)[context]
        cells = [("tokensieve", m) for m in ours]
        if not self.args.skip_kvpress:
            cells += [("kvpress", p) for p in presses]
        if only is not None:
            cells = [c for c in cells if c[0] == "tokensieve" and c[1] in only]
        for impl, method in tqdm(cells, desc=f"passkey {context}"):

            def compute(impl=impl, method=method):
                budget = 1.0 if method == "full" else PASSKEY_BUDGET
                started = time.perf_counter()
                if impl == "tokensieve":
                    reserve = PASSKEY_NEW if agnostic else None
                    policy = lambda: policy_for(method, budget, reserve)  # noqa: E731 (per case)
                    answers = [
                        answer_digits(
                            self.model,
                            self.tokenizer,
                            c,
                            policy(),
                            PASSKEY_NEW,
                            mode=mode,
                            pos_shift=method.endswith("_rerotated"),
                        )
                        for c in cases
                    ]
                else:
                    splits = [c.split for c in cases] if agnostic else None
                    result = run_worker(
                        self.job("passkey", method, budget, cases=[c.ids for c in cases],
                                 new_tokens=PASSKEY_NEW, context=context, splits=splits,
                                 mode=mode)
                    )  # fmt: skip
                    answers = [
                        re.sub(r"\D", "", self.tokenizer.decode(g, skip_special_tokens=True))[:5]
                        for g in result["answers"]
                    ]
                correct = [a == c.key for a, c in zip(answers, cases, strict=True)]
                accuracy = sum(correct) / len(cases)
                error = math.sqrt(accuracy * (1 - accuracy) / len(cases))
                seconds = (time.perf_counter() - started) / len(cases)
                setting = self.setting(budget, context, depths=DEPTHS, answers=answers,
                                       mode=mode, seconds_per_case=round(seconds, 2))  # fmt: skip
                return [
                    record("kv", method, impl, setting, "passkey_accuracy", accuracy,
                           "fraction", len(cases), error)
                ]  # fmt: skip

            prefix = "passkey-agnostic" if agnostic else "passkey"
            self.cell(f"{prefix}/{context}/{impl}/{method}", compute)

    # 3. speed and memory -------------------------------------------------------------
    def speed(self) -> None:
        cells = [("tokensieve", m, n) for n in SPEED_CONTEXTS for m in SPEED_OURS]
        if not self.args.skip_kvpress:
            cells += [("kvpress", p, n) for n in SPEED_CONTEXTS for p in SPEED_PRESSES]
        for impl, method, context in tqdm(cells, desc="decode speed"):

            def compute(impl=impl, method=method, context=context):
                full = method in ("full", "none")
                budget = 1.0 if full else SPEED_BUDGET
                ids = speed_ids(self.tokenizer, context)
                if impl == "tokensieve":
                    out = CHECKPOINTS / "kv-speed-cell.json"
                    subprocess.run(
                        [sys.executable, __file__, "--speed-cell", method, str(context), str(out)],
                        check=True,
                    )
                    result = json.loads(out.read_text())
                else:
                    result = run_worker(
                        self.job("speed", method, budget, ids=ids, context=context,
                                 decode=SPEED_DECODE)
                    )  # fmt: skip
                rates = [1 / s for s in result["step_seconds"]]
                rate, spread = median_iqr(rates)
                setting = self.setting(budget, context, decoded=SPEED_DECODE)
                return [
                    record("kv", method, impl, setting, "decode_tokens_per_second", rate,
                           "tokens/s", len(rates), spread),
                    record("kv", method, impl, setting, "peak_memory_mb",
                           result["peak_memory_mb"], "MB"),
                    record("kv", method, impl, setting, "kv_bytes", result["kv_bytes"], "bytes"),
                ] + ([record("kv", method, impl, setting, "prefill_seconds",
                             result["prefill_seconds"], "s")]
                     if "prefill_seconds" in result else [])  # fmt: skip

            self.cell(f"speed/{impl}/{method}/{context}", compute)


@lru_cache(maxsize=1)
def reference_ids(tokenizer) -> list[int]:
    return tokenizer(pages("reference/*.rst.txt"), add_special_tokens=False)["input_ids"]


def speed_ids(tokenizer, context: int) -> list[int]:
    return reference_ids(tokenizer)[: context + SPEED_DECODE + 1]


@torch.no_grad()
def speed_cell(method: str, context: int, out: Path) -> None:
    """One speed cell in this fresh process: prefill, then time teacher-forced decoding."""
    model, tokenizer = load_model()
    ids = speed_ids(tokenizer, context)
    cache = CompressedCache(model.config, policy_for(method, SPEED_BUDGET))
    with compression(model, cache):
        start = time.perf_counter()
        model(input_ids=torch.tensor([ids[:context]]), **with_cache(cache), logits_to_keep=1)
        prefill = time.perf_counter() - start
        kv_bytes = cache.kv_bytes()
        reset_peak()  # the decode phase's own peak
        steps = []
        for t in range(context, context + SPEED_DECODE):
            start = time.perf_counter()
            model(input_ids=torch.tensor([[ids[t]]]), **with_cache(cache))
            steps.append(time.perf_counter() - start)
    result = {"step_seconds": steps, "kv_bytes": kv_bytes, "peak_memory_mb": rss_mb("VmHWM"),
              "prefill_seconds": prefill}  # fmt: skip
    out.write_text(json.dumps(result))


# results ---------------------------------------------------------------------------


SETTING_DEFAULTS = {"mode": "aware"}  # rows of runs before a key existed


def find(records, metric, impl, method, **setting):
    for r in records:
        if (r["metric"], r["implementation"], r["method"]) == (metric, impl, method) and all(
            r["setting"].get(k, SETTING_DEFAULTS.get(k)) == v for k, v in setting.items()
        ):
            return r
    return None


ORDER = ["full", "none", *OURS, *SELECTION_VARIANTS, "streaming_rerotated",
         "sirllm_after_input", *PRESSES, "streaming_llm_rerotated"]  # fmt: skip


def methods_of(records, metric):
    """(implementation, method) pairs with rows of `metric`, tokensieve first, in the
    order above (rows rerun with --merge come last in the JSON, not in the tables)."""
    pairs = dict.fromkeys((r["implementation"], r["method"]) for r in records
                          if r["metric"] == metric)  # fmt: skip
    rank = {m: i for i, m in reversed(list(enumerate(ORDER)))}
    return sorted(pairs, key=lambda p: (p[0] != "tokensieve", rank.get(p[1], len(ORDER))))


def table(records) -> str:
    env = next(r["setting"] for r in records if r["metric"] == "environment")
    lines = [
        "# kv: KV-cache compression, tokensieve vs kvpress",
        "",
        f"Model {EMBEDDED_NAME} (CPU, 2 cores), torch {env['torch']}, transformers "
        f"{env['transformers']} (kvpress {env.get('kvpress')} in its own venv with "
        f"transformers {env.get('kvpress_transformers')}). Text: Debian python3.11-doc.",
        "",
        f"## Fidelity to the full cache ({FIDELITY_CONTEXT}-token prompt compressed, "
        f"{2 * FIDELITY_DECODE} tokens decoded teacher-forced over two pages)",
        "",
        "| implementation | method | " + " | ".join(
            f"KL {int(b * 100)}% | top-1 {int(b * 100)}% | ppl {int(b * 100)}%" for b in BUDGETS
        ) + " |",
        "|---|---|" + "---:|" * (3 * len(BUDGETS)),
    ]  # fmt: skip
    for impl, method in methods_of(records, "kl_to_full"):
        if method == "none":
            continue
        cells = []
        for b in BUDGETS:
            got = [find(records, m, impl, method, budget=b, context_tokens=FIDELITY_CONTEXT)
                   for m in ("kl_to_full", "top1_agreement", "perplexity")]  # fmt: skip
            cells += [f"{g['value']:.3f}" if g else "" for g in got[:2]]
            cells.append(f"{got[2]['value']:.2f}" if got[2] else "")
        lines.append(f"| {impl} | {method} | " + " | ".join(cells) + " |")
    full = find(records, "perplexity", "tokensieve", "full", budget=1.0)
    none = find(records, "kl_to_full", "kvpress", "none")
    if full:
        lines += ["", f"Full-cache perplexity: {full['value']:.2f}."]
    if none:
        lines[-1] += (
            f" kvpress without a press (transformers {env.get('kvpress_transformers')}) vs our "
            f"full cache: KL {none['value']:.2e} nats (the two stacks agree)."
        )
    contexts = list(PASSKEY_METHODS)
    for mode in MODES:
        rows = [r for r in records if r["metric"] == "passkey_accuracy"
                and r["setting"].get("mode", "aware") == mode]  # fmt: skip
        if not rows:
            continue
        how = (
            "the question read with the context (query-aware)"
            if mode == "aware"
            else "the context compressed alone, the question appended after (query-agnostic)"
        )
        lines += [
            "",
            f"## Passkey retrieval, {mode}: {how}; {int(PASSKEY_BUDGET * 100)}% budget "
            f"({PASSKEY_CASES} cases per cell, depths 0.1–0.9; ± standard error)",
            "",
            "| implementation | method | " + " | ".join(f"{n} tokens" for n in contexts) + " |",
            "|---|---|" + "---:|" * len(contexts),
        ]
        for impl, method in methods_of(rows, "passkey_accuracy"):
            cells = []
            for n in contexts:
                r = find(rows, "passkey_accuracy", impl, method, context_tokens=n)
                cells.append(f"{r['value']:.2f} ± {r['spread']:.2f}" if r else "—")
            lines.append(f"| {impl} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Decode speed and memory ({SPEED_DECODE} decoded tokens after the prompt; median "
        f"tokens/s ± IQR; peak RSS of the decode phase; {int(SPEED_BUDGET * 100)}% budget)",
        "",
        "| implementation | method | context | tokens/s | × full | KV MiB | peak RSS MiB | "
        "prefill s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for impl, method in methods_of(records, "decode_tokens_per_second"):
        base = "full" if impl == "tokensieve" else "none"
        for n in SPEED_CONTEXTS:
            r = find(records, "decode_tokens_per_second", impl, method, context_tokens=n)
            if r is None:
                continue
            ref = find(records, "decode_tokens_per_second", impl, base, context_tokens=n)
            kv = find(records, "kv_bytes", impl, method, context_tokens=n, decoded=SPEED_DECODE)
            peak = find(records, "peak_memory_mb", impl, method, context_tokens=n)
            ratio = f"{r['value'] / ref['value']:.2f}" if ref else ""
            prefill = find(records, "prefill_seconds", impl, method, context_tokens=n)
            prefill_cell = f"{prefill['value']:.1f}" if prefill else "—"
            lines.append(
                f"| {impl} | {method} | {n} | {r['value']:.1f} ± {r['spread']:.1f} | {ratio} | "
                f"{kv['value'] / 2**20:.1f} | {peak['value']:.0f} | {prefill_cell} |"
            )
    lines += stream_table(records)
    lines += multiturn_table(records)
    lines += ["", *goals(records)]
    return "\n".join(lines) + "\n"


def multiturn_table(records) -> list[str]:
    rows = [r for r in records if r["metric"] == "multiturn_accuracy"]
    if not rows:
        return []
    turns = sorted({r["setting"]["turn"] for r in rows})
    first = rows[0]["setting"]
    lines = [
        "",
        f"## Multi-turn conversations ({first['conversations']} conversations of "
        f"{first['turns']} turns × {first['turn_tokens']} tokens of real text, budget "
        f"{first['budget']:.0%} of a conversation)",
        "",
        "Even turns state a fact, odd turns ask for the fact of the turn before; accuracy "
        "per asking turn (greedy digits equal the code). Peak kept: the most slots a layer "
        "held after any forward, over all conversations.",
        "",
        "| method | " + " | ".join(f"turn {t}" for t in turns) + " | mean | peak kept / budget "
        "| s per conversation |",
        "|---|" + "---|" * (len(turns) + 3),
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        values = [find(records, "multiturn_accuracy", "tokensieve", method, turn=t) for t in turns]
        peak = find(records, "multiturn_peak_kept", "tokensieve", method)
        budget = peak["setting"].get("budget_tokens") if peak else None
        mean = statistics.mean(v["value"] for v in values if v)
        lines.append(
            f"| {method} | "
            + " | ".join(f"{v['value']:.2f}" if v else "-" for v in values)
            + f" | {mean:.2f} | {peak['value'] if peak else '-'} / {budget or 'none'} | "
            f"{values[0]['setting']['seconds_per_conversation']} |"
        )
    return lines


def stream_rows(records) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for r in records:
        if r["metric"] == "stream_perplexity":
            curves.setdefault(r["setting"]["curve"], []).append(r)
    return curves


def stream_table(records) -> list[str]:
    curves = stream_rows(records)
    if not curves:
        return []
    reference = next(v for k, v in curves.items() if k.startswith("in-window"))
    in_window = statistics.mean(r["value"] for r in reference)
    first = next(iter(curves.values()))[0]["setting"]
    lines = [
        "",
        f"## Streaming past the context window ({first['context_tokens']} tokens of real text, "
        f"{first['context_tokens'] // first['window']}× the {first['window']}-token window; "
        f"budget {STREAM_BUDGET}, chunks of {first['chunk']})",
        "",
        "Perplexity per window of 1,024 tokens read. In-window reference: the full cache, "
        "each 8,192-token window read from its start.",
        "",
        "| curve | mean of windows | ÷ in-window | first window | worst window | "
        "past the context window (mean) | largest position | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in curves.items():
        values = [r["value"] for r in rows]
        past = [r["value"] for r in rows if r["setting"]["tokens_read"] > r["setting"]["window"]]
        mean = statistics.mean(values)
        setting = rows[0]["setting"]
        lines.append(
            f"| {label} | {mean:.2f} | {mean / in_window:.2f} | {values[0]:.2f} | "
            f"{max(values):.2f} | {statistics.mean(past) if past else float('nan'):.2f} | "
            f"{setting.get('max_position', '')} | {setting.get('seconds', '')} |"
        )
    shares = [r for r in records if r["metric"] == "sink_attention_share"]
    if shares:
        values = [r["value"] for r in sorted(shares, key=lambda r: r["setting"]["layer"])]
        lines += [
            "",
            f"Attention weight on the first token (the sink), per layer, mean over heads and "
            f"query rows 128–{shares[0]['setting']['context_tokens'] - 1} of the stream's "
            f"first {shares[0]['setting']['context_tokens']} tokens (mean over layers "
            f"{statistics.mean(values):.2f}):",
            "",
            "| layer | " + " | ".join(str(i) for i in range(len(values))) + " |",
            "|---|" + "---:|" * len(values),
            "| share | " + " | ".join(f"{v:.2f}" for v in values) + " |",
        ]
    return lines


def frees_memory(records, impl, method) -> bool:
    """Does `method` hold less KV memory than the full cache at a 20% budget? (Token
    selection keeps every key; kvpress's KVzip masks instead of evicting.)"""
    full = find(records, "kv_bytes", "kvpress", "none", budget=1.0)
    mine = find(records, "kv_bytes", impl, method, budget=0.2, context_tokens=FIDELITY_CONTEXT)
    return bool(full and mine and mine["value"] < 0.6 * full["value"])


def best(records, metric, impl, pick, context, budget, evicting=False, mode="aware"):
    """The method `pick` (max or min) chooses among `impl`'s compressed ones."""
    rows = [r for r in records if r["metric"] == metric and r["implementation"] == impl
            and r["method"] not in ("full", "none") and r["setting"]["context_tokens"] == context
            and r["setting"]["budget"] == budget
            and r["setting"].get("mode", "aware") == mode
            and (not evicting or frees_memory(records, impl, r["method"]))]  # fmt: skip
    return pick(rows, key=lambda r: r["value"]) if rows else None


def goals(records) -> list[str]:
    lines = ["## Goals", ""]
    cells = [
        (
            "passkey_accuracy",
            max,
            n,
            f"{mode} passkey accuracy at {n // 1024}k tokens (higher is better)",
            mode,
        )
        for mode in MODES
        for n in PASSKEY_METHODS
    ]
    cells.append(("kl_to_full", min, FIDELITY_CONTEXT, "KL to the full cache (lower is better)",
                  "aware"))  # fmt: skip
    for metric, pick, context, label, mode in cells:
        for evicting in (False, True):
            ours = best(records, metric, "tokensieve", pick, context, 0.2, evicting, mode)
            theirs = best(records, metric, "kvpress", pick, context, 0.2, evicting, mode)
            if ours and theirs:
                scope = "methods that free memory" if evicting else "all methods"
                lines.append(
                    f"- 20% budget, {label}, {scope}: best tokensieve `{ours['method']}` "
                    f"{ours['value']:.3f} vs best kvpress `{theirs['method']}` "
                    f"{theirs['value']:.3f} (ours/theirs "
                    f"{ours['value'] / max(theirs['value'], 1e-12):.2f})."
                )
    full = find(records, "decode_tokens_per_second", "tokensieve", "full", context_tokens=8192)
    for method in SPEED_OURS[1:]:
        r = find(records, "decode_tokens_per_second", "tokensieve", method, context_tokens=8192)
        if full and r:
            goal = 1.5 if method.startswith(("tokenselect", "tidaldecode")) else 2.0
            ratio = r["value"] / full["value"]
            lines.append(
                f"- decode throughput at 8k context, 20% budget, `{method}`: {ratio:.2f}× the "
                f"full cache (goal ≥ {goal}×: {'met' if ratio >= goal else 'not met'})."
            )
    for n in (1024, 2048):
        ref = find(records, "passkey_accuracy", "tokensieve", "full", context_tokens=n)
        for method in ("tokenselect", *SELECTION_VARIANTS):
            r = find(records, "passkey_accuracy", "tokensieve", method, context_tokens=n)
            if ref and r:
                # the goal's own words: within the full cache's standard error
                within = abs(r["value"] - ref["value"]) <= ref["spread"] + 1e-9
                lines.append(
                    f"- aware passkey at {n // 1024}k, `{method}` {r['value']:.2f} vs full "
                    f"{ref['value']:.2f} ± {ref['spread']:.2f} (goal: within one standard "
                    f"error: {'met' if within else 'not met'})."
                )
    return lines


def plots(records) -> dict[str, bytes]:
    out = {}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric, title in (
        (axes[0], "kl_to_full", "KL(full ‖ compressed), nats (log)"),
        (axes[1], "top1_agreement", "top-1 agreement with the full cache"),
    ):
        for impl, method in methods_of(records, metric):
            rows = [find(records, metric, impl, method, budget=b) for b in BUDGETS]
            xs = [b for b, r in zip(BUDGETS, rows, strict=True) if r]
            ys = [r["value"] for r in rows if r]
            if xs:
                ax.plot(xs, ys, marker="o" if impl == "tokensieve" else "s",
                        linestyle="-" if impl == "tokensieve" else "--",
                        label=f"{method} ({impl})")  # fmt: skip
        ax.set_xlabel("budget (fraction of the prompt kept)")
        ax.set_title(title)
        if metric == "kl_to_full":
            ax.set_yscale("log")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"KV-cache fidelity vs budget ({EMBEDDED_NAME}, {FIDELITY_CONTEXT}-token prompt)")
    out["kv-fidelity.png"] = png(fig)

    modes = [
        m
        for m in MODES
        if any(
            r["metric"] == "passkey_accuracy" and r["setting"].get("mode", "aware") == m
            for r in records
        )
    ]
    fig, axes = plt.subplots(len(modes), 1, figsize=(11, 4 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes, strict=True):
        methods = methods_of(records, "passkey_accuracy")
        width = 0.8 / len(PASSKEY_METHODS)
        for j, n in enumerate(PASSKEY_METHODS):
            values = [find(records, "passkey_accuracy", i, m, context_tokens=n, mode=mode)
                      for i, m in methods]  # fmt: skip
            heights = [v["value"] if v else 0 for v in values]
            ax.bar([x + j * width for x in range(len(methods))], heights, width,
                   label=f"{n} tokens")  # fmt: skip
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(methods))],
                      [f"{m}\n({'ts' if i == 'tokensieve' else 'kvpress'})" for i, m in methods],
                      fontsize=7)  # fmt: skip
        ax.set_ylabel("passkey accuracy")
        ax.set_title(f"Passkey retrieval at a 20% budget, {mode} (full = no compression)")
        ax.legend()
    out["kv-passkey.png"] = png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for impl, method in methods_of(records, "decode_tokens_per_second"):
        for ax, metric in zip(axes, ("decode_tokens_per_second", "kv_bytes"), strict=True):
            rows = [find(records, metric, impl, method, context_tokens=n, decoded=SPEED_DECODE)
                    for n in SPEED_CONTEXTS]  # fmt: skip
            xs = [n for n, r in zip(SPEED_CONTEXTS, rows, strict=True) if r]
            ys = [r["value"] / (2**20 if metric == "kv_bytes" else 1) for r in rows if r]
            ax.plot(xs, ys, marker="o", linestyle="-" if impl == "tokensieve" else "--",
                    label=f"{method} ({impl})")  # fmt: skip
    axes[0].set_title("decode tokens/s")
    axes[1].set_title("KV cache MB")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context tokens")
    axes[0].legend(fontsize=7)
    out["kv-speed.png"] = png(fig)

    curves = stream_rows(records)
    if curves:
        fig, ax = plt.subplots(figsize=(9, 4.2))
        for label, rows in curves.items():
            style = "--" if label.startswith("in-window") else "-"
            ax.plot([r["setting"]["tokens_read"] for r in rows], [r["value"] for r in rows],
                    style, marker=".", label=label)  # fmt: skip
        window = next(iter(curves.values()))[0]["setting"]["window"]
        ax.axvline(window, color="grey", linewidth=0.8)
        ax.text(window, ax.get_ylim()[1], " context window", va="top", fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("tokens read")
        ax.set_ylabel("perplexity per 1,024-token window")
        ax.set_title(f"Streaming {EMBEDDED_NAME} past its context window (budget {STREAM_BUDGET})")
        ax.legend(fontsize=7)
        out["kv-stream.png"] = png(fig)

    rows = [r for r in records if r["metric"] == "multiturn_accuracy"]
    if rows:
        methods = list(dict.fromkeys(r["method"] for r in rows))
        turns = sorted({r["setting"]["turn"] for r in rows})
        fig, ax = plt.subplots(figsize=(11, 4))
        width = 0.8 / len(turns)
        for j, turn in enumerate(turns):
            values = [find(records, "multiturn_accuracy", "tokensieve", m, turn=turn)
                      for m in methods]  # fmt: skip
            heights = [v["value"] if v else 0 for v in values]
            ax.bar([x + j * width for x in range(len(methods))], heights, width,
                   label=f"turn {turn}")  # fmt: skip
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(methods))], methods, rotation=20,
                      fontsize=7)  # fmt: skip
        ax.set_ylabel("accuracy")
        ax.set_title("Multi-turn: the fact of the turn before, per asking turn (20% budget)")
        ax.legend()
        out["kv-multiturn.png"] = png(fig)
    return out


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def kvpress_versions() -> dict:
    code = (
        "from importlib.metadata import version as v; import json; "
        "print(json.dumps({'kvpress': v('kvpress'), 'kvpress_transformers': v('transformers')}))"
    )
    done = subprocess.run([str(PRESS_PYTHON), "-c", code], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="forget finished cells")
    parser.add_argument("--replot", action="store_true", help="redraw from the saved JSON")
    parser.add_argument("--skip-kvpress", action="store_true", help="ours only")
    parser.add_argument("--speed-cell", nargs=3, metavar=("METHOD", "CONTEXT", "OUT"))
    parser.add_argument("--phases", nargs="+", default=["fidelity", "passkey1k", "speed",
                        "selection",
                        "passkey2k", "passkey4k", "stream", "multiturn", "agnostic1k",
                        "agnostic2k", "agnostic4k"])  # fmt: skip
    parser.add_argument("--merge", action="store_true",
                        help="keep the saved results of the phases not run (only phases "
                        f"{', '.join(PHASE_ROWS)} can be rerun alone)")  # fmt: skip
    args = parser.parse_args()
    if args.speed_cell:
        method, context, out = args.speed_cell
        return speed_cell(method, int(context), Path(out))
    if args.replot:
        records = json.loads((RESULTS / "kv.json").read_text())
        return write_results("kv", records, table(records), plots(records))
    if not (args.skip_kvpress or args.merge) and not PRESS_PYTHON.is_file():
        raise SystemExit(
            f"{PRESS_PYTHON} is missing: run `make bench-kv` (it creates kvpress's venv)"
        )
    torch.manual_seed(0)
    bench = Bench(args)
    steps = {"fidelity": bench.fidelity, "speed": bench.speed,
             "passkey1k": lambda: bench.passkey(1024), "passkey2k": lambda: bench.passkey(2048),
             "passkey4k": lambda: bench.passkey(4096), "stream": bench.stream,
             "multiturn": bench.multiturn,
             "sirllm": lambda: (bench.fidelity(only=["sirllm"]),
                                bench.passkey(1024, only=["sirllm"])),
             "selection": lambda: (bench.fidelity(only=["tokenselect"]),
                                   [bench.passkey(n, only=["tokenselect", *SELECTION_VARIANTS])
                                    for n in (1024, 2048)]),
             **{f"agnostic{n // 1024}k": (lambda n=n: bench.passkey(n, "agnostic"))
                for n in AGNOSTIC_METHODS}}  # fmt: skip
    kept = []
    if args.merge:  # the other phases' rows and environment stay as their run saved them
        if not set(args.phases) <= set(PHASE_ROWS):
            raise SystemExit(f"--merge reruns only {', '.join(PHASE_ROWS)}")
        saved = json.loads((RESULTS / "kv.json").read_text())
        environment = next(r for r in saved if r["metric"] == "environment")
        later = environment_record("kv", ["tokensieve"])["setting"]
        earlier = environment["setting"].get("rerun_later", {}).get("phases", [])
        phases = [*[p for p in earlier if p not in args.phases], *args.phases]
        environment["setting"]["rerun_later"] = {"phases": phases, **later}
        kept = [r for r in saved if r["metric"] != "environment"
                and not any(PHASE_ROWS[p](r) for p in args.phases)]  # fmt: skip
    else:
        environment = environment_record("kv", ["tokensieve"])
        environment["setting"].update(kvpress_versions())
    for phase in args.phases:
        steps[phase]()
        records = [environment, *kept, *bench.records]
        write_results("kv", records, table(records), plots(records))
    print(table([environment, *kept, *bench.records]))


if __name__ == "__main__":
    main()
