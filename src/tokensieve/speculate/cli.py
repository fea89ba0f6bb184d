"""`tokensieve speculate`: greedy answers, faster, from drafts the model already made."""

from __future__ import annotations

import json
import sys

from tokensieve.commandline import add_common
from tokensieve.errors import UserError
from tokensieve.extensions import EXTRA_SIGNALS
from tokensieve.speculate import DEFAULT_TREE, DRAFTERS

# `inspect --speculate METHOD` shows which tokens a drafter would have had for free.
EXTRA_SIGNALS.add("speculated", "tokensieve.speculate.signal:SpeculationSignal")


def drafter_options(args) -> dict:
    """The options of the chosen method (checked by its constructor, before loading)."""
    size = args.tree_size if args.tree_size is not None else DEFAULT_TREE.get(args.method, 16)
    return {"tree_size": size}


def _check_args(args) -> None:
    if not args.prompt.strip():
        raise UserError("the prompt is empty")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature != 0.0 or args.top_p != 1.0:
        raise UserError(
            "speculative decoding here is greedy (its output is exactly greedy decoding's); "
            "sampling options (--temperature, --top-p) are not supported"
        )


def cmd_speculate(args) -> int:
    from tokensieve.lm import end_of_turn_ids
    from tokensieve.models import load_model, model_display_name
    from tokensieve.speculate.api import check_tree_fits, plain_greedy, prompt_ids
    from tokensieve.speculate.decode import speculative_generate

    _check_args(args)
    options = drafter_options(args)
    drafter = DRAFTERS.build(args.method, **options)  # checked before loading
    model, tokenizer = load_model(args.model)
    ids = prompt_ids(tokenizer, args.prompt, chat=not args.no_chat)
    check_tree_fits(model, len(ids), args.max_new_tokens, drafter)
    eos = end_of_turn_ids(tokenizer)
    if not args.no_compare:  # a process's first forwards are slow: keep them out of both timings
        plain_greedy(model, ids, 2, eos)
    result = speculative_generate(
        model, ids, drafter, args.max_new_tokens, eos, progress=not (args.quiet or args.json)
    )
    figures = {
        "model": model_display_name(model),
        "method": args.method,
        "tree_size": options["tree_size"],
        "tokens_read_per_forward": round(
            sum(result.drafted[1:]) / max(result.forwards - 1, 1) + 1, 3
        ),
        "prompt_tokens": len(ids),
        "new_tokens": len(result.tokens),
        "forwards": result.forwards,
        "accepted_per_forward": round(result.accepted_per_forward, 4),
        "tokens_per_second": round(result.tokens_per_second, 3),
        "text": tokenizer.decode(result.tokens, skip_special_tokens=True),
    }
    if not args.no_compare:
        greedy = plain_greedy(model, ids, args.max_new_tokens, eos)
        figures["greedy_tokens_per_second"] = round(greedy.tokens_per_second, 3)
        figures["speedup"] = round(result.tokens_per_second / greedy.tokens_per_second, 4)
        figures["identical_to_greedy"] = greedy.tokens == result.tokens
        if greedy.tokens != result.tokens:
            pairs = zip(greedy.tokens, result.tokens, strict=False)
            figures["first_difference"] = next(
                (i for i, (a, b) in enumerate(pairs) if a != b),
                min(len(greedy.tokens), len(result.tokens)),
            )
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, indent=1))
        return 0
    print(figures["text"])
    line = (f"{args.method} ({figures['tree_size']} draft nodes): "
            f"{result.accepted_per_forward:.2f} tokens per forward, "
            f"{result.tokens_per_second:.1f} tokens/s")  # fmt: skip
    if not args.no_compare:
        same = (
            "identical"
            if figures["identical_to_greedy"]
            else f"DIFFERENT from token {figures['first_difference']} (a floating-point near-tie?)"
        )
        line += (f"; plain greedy {figures['greedy_tokens_per_second']:.1f} tokens/s "
                 f"({figures['speedup']:.2f}x); output {same}")  # fmt: skip
    print(line, file=sys.stderr)
    return 0


def register(commands) -> None:
    spec = commands.add_parser(
        "speculate",
        help="faster greedy decoding, token for token the same: Token Recycling, Lookahead, ...",
        description=(
            "Answer a prompt greedily, several tokens per forward: a drafter guesses a tree "
            "of next tokens and one forward verifies it. The answer is greedy decoding's."
        ),
    )
    spec.add_argument("--prompt", required=True, help="what the model is asked")
    spec.add_argument("--method", choices=list(DRAFTERS), default="recycling",
                      help="where drafts come from (default recycling)")  # fmt: skip
    spec.add_argument("--max-new-tokens", type=int, default=128, help="answer length (default 128)")
    spec.add_argument(
        "--tree-size", type=int, metavar="N",
        help="draft nodes per forward (recycling: 1-80, default 2, the size that pays on a "
        "CPU; 80 = the authors' tree; others: default 16, prompt-lookup 10)",
    )  # fmt: skip
    spec.add_argument("--no-chat", action="store_true", help="continue the raw prompt text")
    spec.add_argument("--no-compare", action="store_true",
                      help="skip the plain greedy run (speed and identity check)")  # fmt: skip
    spec.add_argument("--json", action="store_true", help="print the figures as JSON")
    spec.add_argument("--temperature", type=float, default=0.0,
                      help="only 0: speculation here is greedy")  # fmt: skip
    spec.add_argument("--top-p", type=float, default=1.0, help="only 1: speculation is greedy")
    add_common(spec, "model", "quiet")
    spec.set_defaults(run=cmd_speculate)
