"""`tokensieve bytes …`: a tokenized model read over bytes — next-byte distributions,
completions of a prompt that ends anywhere, and ensembles across tokenizers."""

from __future__ import annotations

import codecs
import json
import sys

from tokensieve.commandline import add_common, read_text_file
from tokensieve.errors import UserError, check_sampling
from tokensieve.extensions import LANGUAGE_MODEL_VIEWS

# `generate --byte-level` samples over bytes (see tokensieve.extensions).
LANGUAGE_MODEL_VIEWS.add("bytes", "tokensieve.bytes.sampler_view:ByteSamplerView")


def parse_prompt_bytes(text: str) -> bytes:
    """`--prompt-bytes`: text with Python-style escapes (``\\xe2``, ``\\n``), so a prompt
    may end inside a character or be any bytes at all."""
    try:
        return codecs.escape_decode(text.encode("utf-8"))[0]
    except ValueError as exc:
        raise UserError(f"--prompt-bytes has a bad escape: {exc}") from None


def parse_weights(text: str | None, count: int) -> list[float] | None:
    if text is None:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--weights must be numbers separated by commas, got {text!r}") from None
    if len(weights) != count:
        raise UserError(f"--weights gives {len(weights)} weights for {count} models")
    return weights


def _byte_model(args, spec, scoring: bool = False):
    """The byte-level model of `spec`. To continue a prompt, the prompt up to its last word
    boundary is read as tokens (`ByteLM.head_state`; one forward), unless --whole-prefix;
    to score a text, every byte goes through the covers."""
    from tokensieve.bytes import ByteLM
    from tokensieve.models import load_model

    model, tokenizer = load_model(spec)
    beam = args.beam if args.beam > 0 else None
    fixed_head = not scoring and not getattr(args, "whole_prefix", False)
    byte_lm = ByteLM(model, tokenizer, beam=beam, fixed_head=fixed_head, covers=args.covers)
    return byte_lm, tokenizer


def _check(args) -> None:
    if args.beam < 0:
        raise UserError(f"--beam must be at least 1 (0 = no beam), got {args.beam}")
    if getattr(args, "max_bytes", 1) < 1:
        raise UserError(f"--max-bytes must be at least 1, got {args.max_bytes}")
    check_sampling(getattr(args, "temperature", 0.0))  # finite, 0 (greedy) or above


def _show(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def cmd_next(args) -> int:
    import numpy as np

    _check(args)
    prefix = parse_prompt_bytes(args.prompt_bytes)
    byte_lm, _ = _byte_model(args, args.model)
    probabilities = byte_lm.next_byte_distribution(prefix)
    order = np.argsort(-probabilities)[: args.top]
    rows = [
        {"byte": "<end>" if i == 256 else _show(bytes([i])), "probability": float(probabilities[i])}
        for i in order
    ]
    if args.json:
        print(json.dumps({"prefix": _show(prefix), "next": rows}, ensure_ascii=False, indent=1))
    else:
        for row in rows:
            print(f"{row['probability']:.4f}  {row['byte']!r}")
    return 0


def _continue_and_print(args, model, prefix: bytes, figures=dict) -> int:
    """Continue `prefix` with a byte-level model (or ensemble) and print it, or its JSON
    (with what `figures()` adds once the continuation is done)."""
    from tokensieve.bytes.sampling import continue_bytes

    out, ended = continue_bytes(
        model,
        prefix,
        args.max_bytes,
        greedy=args.temperature == 0,
        temperature=args.temperature or 1.0,
        seed=args.seed,
    )
    if args.json:
        found = {"prefix": _show(prefix), "completion": _show(out), "ended": ended}
        print(json.dumps({**found, **figures()}, ensure_ascii=False))
    else:
        sys.stdout.write(_show(prefix + out) + "\n")
    return 0


def cmd_complete(args) -> int:
    _check(args)
    prefix = parse_prompt_bytes(args.prompt_bytes)
    byte_lm, _ = _byte_model(args, args.model)
    return _continue_and_print(args, byte_lm, prefix, lambda: {"forwards": byte_lm.lm.forwards})


def cmd_ensemble(args) -> int:
    from tokensieve.bytes import ByteEnsemble

    _check(args)
    if len(args.models) < 2:
        raise UserError("an ensemble needs two or more --model")
    weights = parse_weights(args.weights, len(args.models))
    prefix = parse_prompt_bytes(args.prompt_bytes)
    ByteEnsemble([None] * len(args.models), weights, args.mode)  # options checked first
    members = [_byte_model(args, spec)[0] for spec in args.models]
    return _continue_and_print(args, ByteEnsemble(members, weights, args.mode), prefix)


def cmd_score(args) -> int:
    import math

    _check(args)
    text = read_text_file(args.file).encode("utf-8")
    if not text:
        raise UserError("the text is empty")
    byte_lm, _ = _byte_model(args, args.model, scoring=True)
    log_p = byte_lm.byte_logprob(text)
    figures = {
        "bytes": len(text),
        "log_prob": log_p,
        "bits_per_byte": -log_p / math.log(2) / len(text),
    }
    print(
        json.dumps(figures)
        if args.json
        else f"{figures['bits_per_byte']:.4f} bits per byte over {len(text)} bytes"
    )
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "bytes",
        help="a tokenized model over bytes: next bytes, completions from any byte, ensembles",
        description="Read a tokenized language model as a model over bytes.",
    )
    sub = parser.add_subparsers(dest="bytes_command", required=True, parser_class=type(parser))

    def common(p, many_models=False):
        if many_models:
            p.add_argument(
                "--model",
                dest="models",
                action="append",
                default=[],
                help="a model (give two or more)",
            )
            add_common(p, "seed", "quiet")
        else:
            add_common(p, "model", "seed", "quiet")
        p.add_argument(
            "--covers", default="canonical", choices=["canonical", "all"],
            help="canonical (default): the covers the tokenizer can produce (Phan et al.'s "
            "algorithm with a prefix-canonical test instead of their round trip, the last "
            "token unfiltered), exact when the model gives other tokenizations no mass; all: "
            "every tokenization (the model's exact byte marginal; give --beam on long text). "
            "To continue a prompt, both apply after its last word boundary unless "
            "--whole-prefix",
        )  # fmt: skip
        p.add_argument(
            "--beam", type=int, default=0,
            help="keep only the K heaviest hypotheses per byte (a lower bound; default 0 = "
            "keep every one)",
        )  # fmt: skip
        p.add_argument("--json", action="store_true", help="print JSON")
        if p.prog.split()[-1] != "score":
            p.add_argument(
                "--whole-prefix", action="store_true",
                help="read every byte of the prompt through the covers (slower; by default "
                "the prompt up to its last word boundary is read as its tokens)",
            )  # fmt: skip

    nxt = sub.add_parser("next", help="the next-byte distribution after a byte prefix")
    nxt.add_argument(
        "--prompt-bytes", required=True, help="the prefix; Python escapes allowed (\\xe2, \\n)"
    )
    nxt.add_argument("--top", type=int, default=10, help="how many bytes to list")
    common(nxt)
    nxt.set_defaults(run=cmd_next)

    for name, runner, many in (("complete", cmd_complete, False), ("ensemble", cmd_ensemble, True)):
        p = sub.add_parser(
            name,
            help="continue a prompt that may end anywhere"
            if not many
            else "continue a prompt with two models combined over bytes",
        )
        p.add_argument(
            "--prompt-bytes", required=True, help="the prefix; Python escapes allowed (\\xe2, \\n)"
        )
        p.add_argument("--max-bytes", type=int, default=40, help="bytes to add (default 40)")
        p.add_argument(
            "--temperature", type=float, default=0.0, help="0 = greedy (default); above 0 samples"
        )
        if many:
            p.add_argument("--weights", help="one weight per model, summing to 1 (default equal)")
            p.add_argument("--mode", default="mixture", help="mixture (default) or product")
        common(p, many)
        p.set_defaults(run=runner)

    score = sub.add_parser("score", help="bits per byte of a text under the byte-level model")
    score.add_argument("--file", required=True, help="a UTF-8 text file ('-' reads stdin)")
    common(score)
    score.set_defaults(run=cmd_score)
