"""`tokensieve generate`: completions that satisfy a constraint, with importance weights."""

from __future__ import annotations

import json
import sys

from tokensieve.commandline import add_common, read_text_file
from tokensieve.errors import UserError


def cmd_generate(args) -> int:
    from tokensieve.generate import generate
    from tokensieve.models import load_model

    constraint = _constraint(args)
    if not 0.0 <= args.ess_threshold <= 1.0:
        raise UserError(f"--ess-threshold must be in [0, 1], got {args.ess_threshold}")
    if not args.prompt.strip():
        raise UserError("the prompt is empty")
    model, tokenizer = load_model(args.model)
    result = generate(
        model,
        tokenizer,
        args.prompt,
        constraint,
        method=args.sampler,
        particles=args.particles,
        max_tokens=args.max_tokens,
        ess_threshold=args.ess_threshold,
        seed=args.seed,
        chat=not args.no_chat,
        progress=not args.quiet and not args.json,
        estimator=args.estimator,
        view="bytes" if args.byte_level else None,
    )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
    else:
        for completion in result.completions:
            print(f"{completion.weight:8.4f}  {completion.text!r}")
        estimate = "n/a" if not result.completions else f"{result.log_marginal:.3f}"
        print(
            f"{result.sampler} x{result.particles}: {result.checks_per_token:.1f} checks/token, "
            f"{result.ms_per_token:.1f} ms/token, log P(constraint) ≈ {estimate}",
            file=sys.stderr,
        )
    if not result.completions:
        print(
            f"error: no completion satisfies the constraint within {args.max_tokens} tokens",
            file=sys.stderr,
        )
        return 1
    return 0


def _constraint(args):
    """The one constraint given, built by its registry entry (files are read first)."""
    from tokensieve.generate import CONSTRAINTS

    given = {"regex": args.regex, "json-schema": args.json_schema, "grammar": args.grammar,
             "predicate": args.predicate}  # fmt: skip
    chosen = [(kind, value) for kind, value in given.items() if value is not None]
    if len(chosen) != 1:
        raise UserError(
            "give exactly one constraint: --regex, --json-schema, --grammar or --predicate"
        )
    kind, value = chosen[0]
    if kind in ("json-schema", "grammar"):
        value = read_text_file(value)
    return CONSTRAINTS.load(kind)(value)


def register(commands) -> None:
    gen = commands.add_parser(
        "generate",
        help="constrained generation: masking, adaptive weighted rejection sampling, SMC",
        description="Sample completions that satisfy a constraint, with importance weights.",
    )
    gen.add_argument("--prompt", required=True, help="what the model is asked")
    constraint = gen.add_argument_group("constraint (exactly one)")
    constraint.add_argument("--regex", help="the whole answer must match this expression")
    constraint.add_argument("--json-schema", metavar="FILE", help="a JSON Schema file")
    constraint.add_argument("--grammar", metavar="FILE", help="a Lark grammar file (llguidance)")
    constraint.add_argument(
        "--predicate",
        metavar="MODULE:FUNCTION",
        help="a Python function f(text) or f(text, complete) -> bool (MODULE.py may be in "
        "the current directory)",
    )
    gen.add_argument("--sampler", choices=("awrs", "smc", "masking"), default="awrs")
    gen.add_argument("--particles", type=int, help="particles (default 5 for smc, else 1)")
    gen.add_argument(
        "--estimator", choices=("recursive", "paper", "geometric"), default="recursive",
        help="AWRS weight: genlm-control's recursive one (default), the paper's two loops, "
        "or genlm-control's geometric one",
    )  # fmt: skip
    gen.add_argument(
        "--max-tokens", type=int, default=32,
        help="answer tokens per completion, the end-of-turn token not counted (default 32)",
    )  # fmt: skip
    gen.add_argument("--ess-threshold", type=float, default=0.5, help="smc resampling threshold")
    add_common(gen, "model", "seed", "quiet")
    gen.add_argument("--no-chat", action="store_true", help="continue the raw prompt text")
    gen.add_argument(
        "--byte-level", action="store_true",
        help="sample byte by byte from the model read over bytes (tokensieve bytes); "
        "--max-tokens then counts bytes",
    )  # fmt: skip
    gen.add_argument("--json", action="store_true", help="machine-readable output")
    gen.set_defaults(run=cmd_generate)
