"""`tokensieve inspect`: which tokens matter in a text or in the model's own answer."""

from __future__ import annotations

from pathlib import Path

from tokensieve.commandline import add_common, read_text_file
from tokensieve.errors import UserError, check_sampling
from tokensieve.extensions import EXTRA_SIGNALS, LiveChoices
from tokensieve.signal_names import SIGNALS


def cmd_inspect(args) -> int:
    from tokensieve.inspect.report import write_inspect_report
    from tokensieve.inspect.signals import answer_signals, text_signals
    from tokensieve.models import cache_root, load_model
    from tokensieve.outputs import check_output

    text = _check_args(args)
    check_output(args.out, [args.model, args.file, cache_root()])  # before the slow part
    extra = _extra_signal(args)  # built (and its options checked) before the model loads
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
    plots = {}
    if extra is not None:
        values, plots = extra(model, signals.meta.get("context_ids", []), signals.token_ids)
        signals = signals.with_signal(extra.name, values, extra.unit)
    directory, summary = write_inspect_report(
        signals, args.out, rho=args.rho, signal=args.signal, extra_plots=plots
    )
    _print_summary(signals, summary, directory)
    return 0


def _check_args(args) -> str | None:
    """Every option checked before the model loads; returns the text to read, if any."""
    if not 0.0 < args.rho <= 1.0:
        raise UserError(f"--rho must be in (0, 1], got {args.rho}")
    sources = [x is not None for x in (args.text, args.file, args.prompt)]
    if sum(sources) != 1:
        raise UserError("give exactly one of --text, --file or --prompt")
    if args.generate is not None and args.prompt is None:
        raise UserError("--generate needs --prompt (the question the model answers)")
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("the prompt is empty")
    if args.generate is not None and args.generate < 1:
        raise UserError(f"--generate must be at least 1, got {args.generate}")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    check_sampling(args.temperature)
    if args.prompt is not None:
        return None
    text = args.text if args.text is not None else read_text_file(args.file)
    if not text.strip():
        raise UserError("the text is empty")
    return text


def _extra_signal(args):
    """The signal another capability computes for the report, if one was asked for."""
    if args.kv_policy and args.speculate:
        raise UserError("give one of --kv-policy and --speculate")
    if args.kv_policy:
        return EXTRA_SIGNALS.build("kv_kept", policy=args.kv_policy, budget=args.budget)
    if args.speculate:
        return EXTRA_SIGNALS.build("speculated", method=args.speculate)
    if args.signal in SIGNALS:
        return None
    raise UserError(f"--signal {args.signal} needs its options "
                    "(kv_kept: --kv-policy; speculated: --speculate)")  # fmt: skip


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


def register(commands) -> None:
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
    add_common(inspect, "model", "seed", "quiet")
    inspect.add_argument(
        "--rho", type=float, default=0.2, help="share of tokens marked forking (default 0.2)"
    )
    inspect.add_argument(
        "--signal", choices=LiveChoices(*SIGNALS, registry=EXTRA_SIGNALS), default="entropy",
        help="signal coloured first",
    )  # fmt: skip
    inspect.add_argument(
        "--out", default="tokensieve-report", help="output directory (a fresh one if taken)"
    )
    inspect.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)"
    )
    inspect.add_argument("--max-tokens", type=int, help="analyse only the first N tokens")
    inspect.add_argument(
        "--kv-policy", metavar="POLICY",
        help="also mark the tokens this KV policy keeps (see `tokensieve kv generate --help`)",
    )  # fmt: skip
    inspect.add_argument("--budget", default="0.2", help="KV budget for --kv-policy")
    inspect.add_argument(
        "--speculate", metavar="METHOD",
        help="also mark the tokens this drafter had for free, drafted and accepted "
        "(recycling, lookahead, lookahead-trie, prompt-lookup; see `tokensieve speculate "
        "--help`)",
    )  # fmt: skip
    inspect.set_defaults(run=cmd_inspect)
