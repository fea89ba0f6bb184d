"""Command line: parses arguments, calls the library, prints, exits.

A user's mistake becomes ``error: <one line>`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tokensieve.errors import UserError
from tokensieve.signals import SIGNALS


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(message)


def _read_file(name: str) -> str:
    """A user's UTF-8 text file ('-' is standard input), or a one-line error."""
    if name == "-":
        data, shown = sys.stdin.buffer.read(), "standard input"
    else:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"cannot read '{name}': no such file")
        data, shown = path.read_bytes(), f"'{name}'"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{shown} is not UTF-8 text (byte {exc.start})") from None


def _read_text(args) -> str:
    return args.text if args.text is not None else _read_file(args.file)


def _check_rho(rho: float) -> float:
    if not 0.0 < rho <= 1.0:
        raise UserError(f"--rho must be in (0, 1], got {rho}")
    return rho


def cmd_inspect(args) -> int:
    from tokensieve.models import load_model
    from tokensieve.report import write_inspect_report
    from tokensieve.signals import answer_signals, text_signals

    rho = _check_rho(args.rho)
    sources = [x is not None for x in (args.text, args.file, args.prompt)]
    if sum(sources) != 1:
        raise UserError("give exactly one of --text, --file or --prompt")
    if args.generate is not None and args.prompt is None:
        raise UserError("--generate needs --prompt (the question the model answers)")
    text = None if args.prompt is not None else _read_text(args)
    if text is not None and not text.strip():
        raise UserError("the text is empty")
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("the prompt is empty")
    if args.generate is not None and args.generate < 1:
        raise UserError(f"--generate must be at least 1, got {args.generate}")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1, got {args.max_tokens}")

    if args.signal == "kv_kept" and not args.kv_policy:
        raise UserError("--signal kv_kept needs --kv-policy")
    # built before the model loads, so bad options are refused before the slow part
    policy = _make_kv_policy(args.kv_policy, parse_budget(args.budget)) if args.kv_policy else None
    model, tokenizer = load_model(args.model)
    progress = not args.quiet
    if args.prompt is not None:
        signals = answer_signals(
            model,
            tokenizer,
            args.prompt,
            args.generate or 256,
            seed=args.seed,
            temperature=args.temperature,
            progress=progress,
        )
    else:
        signals = text_signals(
            model, tokenizer, text, max_tokens=args.max_tokens, progress=progress
        )
    extra = {}
    if policy is not None:
        extra = _mark_kept_tokens(model, signals, policy, args.budget)
    directory, summary = write_inspect_report(
        signals, args.out, rho=rho, signal=args.signal, extra_plots=extra
    )
    _print_summary(signals, summary, directory)
    return 0


def _mark_kept_tokens(model, signals, policy, budget: str) -> dict[str, bytes]:
    """Add a `kv_kept` signal (share of layers × KV heads keeping each token) and the
    positions × layers heatmap of what the policy keeps after reading the sequence."""
    from tokensieve.kv.kept_map import kept_map
    from tokensieve.report import kept_heatmap

    context = list(signals.meta.get("context_ids", []))
    share = kept_map(model, context + list(signals.token_ids), policy)
    signals.values["kv_kept"] = share[:, len(context) :].mean(axis=0)
    title = f"{policy.name} at budget {budget}: kept tokens per layer ({signals.model})"
    return {"kv-kept.png": kept_heatmap(share[:, len(context) :], title)}


def _print_summary(signals, summary: dict, directory: Path) -> None:
    top = "  ".join(f"{word} ×{count}" for word, count in summary["top_forking"][:8])
    pct = f"{100 * (1 - summary['rho']):.0f}th percentile"
    lines = [
        ("model", signals.model),
        ("tokens", summary["tokens"]),
        ("mean entropy", f"{summary['mean_entropy']:.3f} nats"),
        ("entropy < 0.01", f"{summary['fraction_below_0.01']:.1%} of tokens"),
        (pct, f"{summary['entropy_p80']:.3f} nats"),
        ("forking tokens", f"{summary['forking_count']} (top {summary['rho']:.0%} by entropy)"),
        ("top forks", top),
        ("report", directory / "report.html"),
    ]
    for label, value in lines:
        print(f"{label:<16} {value}")


def cmd_generate(args) -> int:
    import json

    from tokensieve.generate import (
        LLGuidanceConstraint,
        PredicateConstraint,
        RegexConstraint,
        generate,
    )
    from tokensieve.models import load_model

    given = [args.regex, args.json_schema, args.grammar, args.predicate]
    if sum(x is not None for x in given) != 1:
        raise UserError(
            "give exactly one constraint: --regex, --json-schema, --grammar or --predicate"
        )
    if not 0.0 <= args.ess_threshold <= 1.0:
        raise UserError(f"--ess-threshold must be in [0, 1], got {args.ess_threshold}")
    if args.regex is not None:
        constraint = RegexConstraint(args.regex)
    elif args.json_schema is not None:
        constraint = LLGuidanceConstraint.from_json_schema(_read_file(args.json_schema))
    elif args.grammar is not None:
        constraint = LLGuidanceConstraint.from_lark(_read_file(args.grammar))
    else:
        constraint = PredicateConstraint.from_spec(args.predicate)
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


def parse_budget(text: str) -> float | int:
    """'0.2' is a fraction of the prompt, '512' a token count."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(
            f"--budget must be a fraction like 0.2 or a token count, got {text!r}"
        ) from None
    if value.is_integer() and value > 1:
        return int(value)
    if not 0.0 < value <= 1.0:
        raise UserError(f"--budget must be in (0, 1] as a fraction or > 1 tokens, got {text}")
    return value


def cmd_kv_generate(args) -> int:
    import time

    import torch

    from tokensieve.kv import CompressedCache, compression
    from tokensieve.models import load_model, with_cache
    from tokensieve.signals import chat_prompt_ids, check_context, end_of_turn_ids

    budget = parse_budget(args.budget)
    context = _read_file(args.file) if args.file else ""
    question = args.prompt or ""
    if not (context + question).strip():
        raise UserError("nothing to read: give --file and/or --prompt")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    policy = _make_kv_policy(
        args.policy,
        budget,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        sink=args.sink,
        recent=args.recent,
    )
    model, tokenizer = load_model(args.model)
    text = f"{context}\n\n{question}".strip()
    ids = chat_prompt_ids(tokenizer, text)
    check_context(model, len(ids) + args.max_new_tokens)
    cache = CompressedCache(model.config, policy)
    started = time.perf_counter()
    with torch.no_grad(), compression(model, cache):
        output = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            **with_cache(cache),
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            eos_token_id=end_of_turn_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
    seconds = time.perf_counter() - started
    answer = output[0, len(ids) :]
    print(tokenizer.decode(answer, skip_special_tokens=True).strip())
    seen = cache.get_seq_length()
    kept = cache.layers[0].physical_length()
    full_bytes = cache.kv_bytes() * seen // max(kept, 1)
    print(
        f"{policy.name}: kept {kept} of {seen} tokens per layer and head "
        f"(budget {cache.budget}); KV {cache.kv_bytes() / 2**20:.1f} MiB vs "
        f"{full_bytes / 2**20:.1f} MiB full; {len(answer) / seconds:.1f} tokens/s",
        file=sys.stderr,
    )
    return 0


def cmd_kv_eval(args) -> int:
    import json

    import torch

    from tokensieve.evaluate import kv_fidelity, make_passkey_case, passkey_accuracy
    from tokensieve.models import load_model
    from tokensieve.outputs import fresh_directory, write_atomic

    budgets = [parse_budget(b) for b in args.budgets]
    names = args.policies
    if args.context < 2 or args.decode < 1:
        raise UserError("--context must be at least 2 and --decode at least 1")
    if args.passkey_cases < 0:
        raise UserError("--passkey-cases must not be negative")
    for name in names:  # validate names and options before the slow part
        _eval_policy(name, budgets[0], args)
    if args.file:
        text = _read_file(args.file)
    else:
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[key] for key in sorted(topics))
    model, tokenizer = load_model(args.model)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: args.context + args.decode]
    if len(ids) < args.context + 1:
        raise UserError(f"the text has {len(ids)} tokens; --context {args.context} needs more")
    progress = not args.quiet
    rows = []
    for budget in budgets:
        policies = [_eval_policy(name, budget, args) for name in names]
        for result in kv_fidelity(model, torch.tensor(ids), args.context, policies, progress):
            if result.policy == "full" and rows:
                continue
            row = {**result.__dict__, "budget": budget if result.policy != "full" else 1.0}
            if args.passkey_cases:
                cases = [
                    make_passkey_case(
                        tokenizer,
                        text,
                        args.passkey_tokens,
                        (i + 0.5) / args.passkey_cases,
                        args.seed + i,
                    )
                    for i in range(args.passkey_cases)
                ]
                policy = (
                    None if result.policy == "full" else _eval_policy(result.policy, budget, args)
                )
                row["passkey_accuracy"], _ = passkey_accuracy(model, tokenizer, cases, policy)
            rows.append(row)
            print(
                f"{row['policy']:>10} budget {row['budget']:<5} ppl {row['perplexity']:7.2f}  "
                f"KL {row['kl_to_full']:.4f}  top1 {row['top1_agreement']:.3f}  "
                f"KV {row['kv_bytes'] / 2**20:6.1f} MiB"
                + (f"  passkey {row['passkey_accuracy']:.2f}" if args.passkey_cases else "")
            )
    if args.out:
        directory = fresh_directory(args.out)
        write_atomic(directory / "kv-eval.json", json.dumps(rows, indent=1))
        print(f"results          {directory / 'kv-eval.json'}")
    return 0


def _make_kv_policy(name, budget, *, seed=0, max_new_tokens=None, sink=None, recent=None):
    """A KV policy from CLI options: `full` takes none; only keyformer and random are
    seeded; keyformer's temperature schedule needs the number of new tokens."""
    from tokensieve.kv import make_policy

    if name == "full":
        return make_policy(name)
    options = {"budget": budget}
    if sink is not None:
        options["sink"] = sink
    if recent is not None:
        options["recent"] = recent
    if name in ("keyformer", "random"):
        options["seed"] = seed
    if name == "keyformer" and max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    return make_policy(name, **options)


def _eval_policy(name, budget, args):
    return _make_kv_policy(name, budget, seed=args.seed, max_new_tokens=args.decode)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokensieve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from tokensieve.kv.policies import POLICIES

    inspect = commands.add_parser(
        "inspect",
        help="per-token entropy, surprisal and attention of a text or of the model's answer",
        description="Show which tokens matter: an HTML heatmap, signals.json/csv and plots.",
    )
    source = inspect.add_argument_group("input (exactly one)")
    source.add_argument("--text", help="the text to analyse")
    source.add_argument("--file", help="a UTF-8 text file to analyse ('-' reads stdin)")
    source.add_argument("--prompt", help="a question the model answers; its answer is analysed")
    inspect.add_argument(
        "--generate", type=int, metavar="N", help="answer length in tokens (default 256)"
    )
    inspect.add_argument(
        "--model", help="local HF model directory or .gguf file (default: embedded SmolLM2-135M)"
    )
    inspect.add_argument(
        "--rho", type=float, default=0.2, help="share of tokens marked forking (default 0.2)"
    )
    inspect.add_argument(
        "--signal",
        choices=(*SIGNALS, "kv_kept"),
        default="entropy",
        help="signal coloured first",
    )
    inspect.add_argument(
        "--out", default="tokensieve-report", help="output directory (a fresh one if taken)"
    )
    inspect.add_argument("--seed", type=int, default=0, help="sampling seed for --generate")
    inspect.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)"
    )
    inspect.add_argument("--max-tokens", type=int, help="analyse only the first N tokens")
    inspect.add_argument(
        "--kv-policy", choices=sorted(POLICIES), help="also mark the tokens this KV policy keeps"
    )
    inspect.add_argument("--budget", default="0.2", help="KV budget for --kv-policy")
    inspect.add_argument("--quiet", action="store_true", help="no progress bars")
    inspect.set_defaults(run=cmd_inspect)

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
        help="a Python function f(text) or f(text, complete) -> bool",
    )
    gen.add_argument("--sampler", choices=("awrs", "smc", "masking"), default="awrs")
    gen.add_argument("--particles", type=int, help="particles (default 5 for smc, else 1)")
    gen.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (default 32)")
    gen.add_argument("--ess-threshold", type=float, default=0.5, help="smc resampling threshold")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--model", help="local HF model directory or .gguf (default: embedded)")
    gen.add_argument("--no-chat", action="store_true", help="continue the raw prompt text")
    gen.add_argument("--json", action="store_true", help="machine-readable output")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(run=cmd_generate)

    kv = commands.add_parser("kv", help="KV-cache compression: keep only the key tokens")
    kv_commands = kv.add_subparsers(dest="kv_command", required=True, parser_class=_Parser)
    kv_gen = kv_commands.add_parser(
        "generate",
        help="answer with a compressed KV cache",
        description="Read a long "
        "context with a KV policy evicting all but the key tokens, then answer greedily.",
    )
    kv_gen.add_argument("--policy", choices=sorted(POLICIES), default="keyformer")
    kv_gen.add_argument(
        "--budget", default="0.2", help="fraction of the prompt (0.2) or tokens (512)"
    )
    kv_gen.add_argument("--file", help="the long context (UTF-8 text)")
    kv_gen.add_argument("--prompt", help="the question asked after the context")
    kv_gen.add_argument("--max-new-tokens", type=int, default=64)
    kv_gen.add_argument("--sink", type=int, help="first tokens always kept")
    kv_gen.add_argument("--recent", type=int, help="last tokens always kept")
    kv_gen.add_argument("--seed", type=int, default=0)
    kv_gen.add_argument("--model", help="local HF model directory or .gguf (default: embedded)")
    kv_gen.add_argument("--quiet", action="store_true")
    kv_gen.set_defaults(run=cmd_kv_generate)

    kv_eval = kv_commands.add_parser(
        "eval", help="fidelity to the full cache and passkey retrieval, per policy and budget"
    )
    kv_eval.add_argument(
        "--policies",
        nargs="+",
        choices=sorted(POLICIES),
        default=[
            "streaming",
            "h2o",
            "keyformer",
            "sirllm",
            "snapkv",
            "tova",
            "tokenselect",
            "tidaldecode",
            "random",
        ],
    )
    kv_eval.add_argument("--budgets", nargs="+", default=["0.1", "0.2", "0.3", "0.5"])
    kv_eval.add_argument(
        "--file", help="real text to decode (default: the Python reference, pydoc_data)"
    )
    kv_eval.add_argument("--context", type=int, default=512, help="tokens read before decoding")
    kv_eval.add_argument("--decode", type=int, default=64, help="tokens decoded teacher-forced")
    kv_eval.add_argument("--passkey-cases", type=int, default=0)
    kv_eval.add_argument("--passkey-tokens", type=int, default=1024)
    kv_eval.add_argument("--seed", type=int, default=0)
    kv_eval.add_argument("--model", help="local HF model directory or .gguf (default: embedded)")
    kv_eval.add_argument("--out", help="directory for kv-eval.json (a fresh one if taken)")
    kv_eval.add_argument("--quiet", action="store_true")
    kv_eval.set_defaults(run=cmd_kv_eval)

    from tokensieve.vocab.cli import register as register_vocab

    register_vocab(commands, _Parser)
    from tokensieve.rl.cli import register as register_rl

    register_rl(commands, _Parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        args = build_parser().parse_args(argv)
        if getattr(args, "quiet", False):
            transformers.utils.logging.disable_progress_bar()
        return args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
