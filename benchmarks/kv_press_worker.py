"""kvpress's side of `benchmarks/kv.py`: runs inside kvpress's own venv (it pins
transformers 5.2), on the same model directory and the same token ids as ours.

Usage: ``python kv_press_worker.py JOB.json RESULT.json``. A job is one press at one
compression ratio and one kind of measurement:

- ``fidelity``: prefill ``ids[:context]`` under the press, then feed the rest one token
  at a time (teacher-forced); the logits are saved to ``logits_out`` (torch .pt) and
  compared with our full-cache logits by the caller;
- ``passkey``: per case, prefill the prompt under the press and decode greedily;
  the generated token ids come back. With ``splits`` (query-agnostic), only
  ``case[:split]`` (the context) is prefilled under the press; the question
  ``case[split:]`` is read afterwards on the compressed cache, without the press, as
  kvpress's pipeline reads a question after compressing its context;
- ``speed``: prefill ``context`` tokens, then time greedy-free decoding (the next
  real tokens fed one by one) and measure the decode phase's peak RSS.

Decoding continues with the original positions (``position_ids`` counted from the
uncompressed length), as kvpress's pipeline does, except after ``KeyRerotationPress``,
where its pipeline goes on from the compressed cache's length. Only torch, transformers and
kvpress are imported here.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext

import torch
from kvpress import (
    DecodingPress,
    ExpectedAttentionPress,
    KeyRerotationPress,
    KVzipPress,
    ObservedAttentionPress,
    PrefillDecodingPress,
    SnapKVPress,
    StreamingLLMPress,
    TOVAPress,
)
from transformers import AutoModelForCausalLM, DynamicCache

DECODING_INTERVAL = 16  # DecodingPress: compress every 16 generated tokens


def make_press(name: str, ratio: float, context: int):
    """The press called `name`, removing `ratio` of the prompt's KV pairs."""
    simple = {
        "streaming_llm": StreamingLLMPress,
        "snapkv": SnapKVPress,
        "observed_attention": ObservedAttentionPress,
        "tova": TOVAPress,
        "expected_attention": ExpectedAttentionPress,
        "kvzip": KVzipPress,
    }
    if name == "none":
        return None
    if name in simple:
        return simple[name](compression_ratio=ratio)
    if name == "streaming_llm_rerotated":  # kept keys re-rotated to their ranks
        return KeyRerotationPress(press=StreamingLLMPress(compression_ratio=ratio))
    if name == "decoding":  # prompt by SnapKV, then back to the budget every 16 steps
        target = max(1, int(context * (1 - ratio)))
        return PrefillDecodingPress(
            prefilling_press=SnapKVPress(compression_ratio=ratio),
            decoding_press=DecodingPress(
                base_press=TOVAPress(),
                compression_interval=DECODING_INTERVAL,
                target_size=target,
                hidden_states_buffer_size=DECODING_INTERVAL,
            ),
        )
    raise ValueError(f"unknown press {name}")


def load(model_dir: str, press_name: str):
    eager = press_name == "observed_attention"  # needs attention weights
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager" if eager else "sdpa"
    )
    return model.eval()


def kv_bytes(cache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers)


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


@torch.no_grad()
def run(model, press, ids: list[int], context: int, steps: int, greedy: bool, timer=None,
        question: list[int] | None = None):  # fmt: skip
    """Prefill ``ids[:context]`` under `press`, then `steps` decode steps.

    Teacher-forced (the next ids) unless `greedy`. Returns (logits rows, generated ids,
    cache); `timer(cache)` is called between prefill and decoding and `timer(None)`
    after each decode step. A `question` is read after the prefill, without the press,
    at the positions that follow the context.
    """
    cache = DynamicCache()
    prompt = torch.tensor([ids[:context]])
    with press(model) if press is not None else nullcontext():
        out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
    if isinstance(press, KeyRerotationPress):  # positions go on from the cache's length,
        context = cache.get_seq_length()  # as kvpress's pipeline does for this press
    if question:
        positions = torch.arange(context, context + len(question))[None]
        out = model(input_ids=torch.tensor([question]), past_key_values=cache,
                    position_ids=positions, use_cache=True)  # fmt: skip
        context += len(question)
    rows, generated = [out.logits[0, -1].float()], []
    if timer is not None:
        timer(cache)
    with press(model) if isinstance(press, PrefillDecodingPress) else nullcontext():
        for step in range(steps):
            token = int(rows[-1].argmax()) if greedy else ids[context + step]
            generated.append(token)
            out = model(
                input_ids=torch.tensor([[token]]),
                past_key_values=cache,
                position_ids=torch.tensor([[context + step]]),
                use_cache=True,
            )
            rows.append(out.logits[0, -1].float())
            if timer is not None:
                timer(None)
    return rows, generated, cache


def main() -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.manual_seed(job.get("seed", 0))
    torch.set_num_threads(job.get("threads", torch.get_num_threads()))
    model = load(job["model_dir"], job["press"])
    kind, ratio = job["kind"], job["ratio"]
    result: dict = {"press": job["press"], "ratio": ratio, "kind": kind}
    if kind == "fidelity":
        ids, context = job["ids"], job["context"]
        press = make_press(job["press"], ratio, context)
        rows, _, cache = run(model, press, ids, context, len(ids) - context - 1, greedy=False)
        torch.save(torch.stack(rows), job["logits_out"])
        result["kv_bytes"] = kv_bytes(cache)
    elif kind == "passkey":
        answers = []
        splits = job.get("splits") or [len(case) for case in job["cases"]]
        for case, split in zip(job["cases"], splits, strict=True):
            press = make_press(job["press"], ratio, split)
            _, generated, _ = run(model, press, case, split, job["new_tokens"], greedy=True,
                                  question=case[split:])  # fmt: skip
            answers.append(generated)
        result["answers"] = answers
    elif kind == "speed":
        ids, context, decode = job["ids"], job["context"], job["decode"]
        press = make_press(job["press"], ratio, context)
        ticks: list[float] = []

        def timer(cache):
            if cache is not None:
                result["kv_bytes"] = kv_bytes(cache)
                with open("/proc/self/clear_refs", "w") as f:  # the decode phase's own peak
                    f.write("5")
            ticks.append(time.perf_counter())

        run(model, press, ids, context, decode, greedy=False, timer=timer)
        result["step_seconds"] = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        result["peak_memory_mb"] = rss_mb("VmHWM")
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
