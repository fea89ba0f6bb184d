"""`tokensieve kv …`: answer with a compressed KV cache; evaluate policies against the full one."""

from __future__ import annotations

import argparse
import json
import sys
import time

from tokensieve.commandline import add_common, checked_device, read_text_file
from tokensieve.errors import UserError
from tokensieve.extensions import EXTRA_SIGNALS
from tokensieve.kv.options import MAX_TURNS, make_kv_policy, parse_budget
from tokensieve.kv.policies import POLICIES

# `inspect --kv-policy` marks the tokens a policy keeps (see tokensieve.extensions).
EXTRA_SIGNALS.add("kv_kept", "tokensieve.kv.kept_map:KeptSignal")

EVAL_POLICIES = ["streaming", "h2o", "keyformer", "sirllm", "snapkv", "tova", "tokenselect",
                 "tidaldecode", "random"]  # fmt: skip


def cmd_generate(args) -> int:
    import torch

    from tokensieve.kv import CompressedCache, compression
    from tokensieve.kv.cache import read_in_chunks
    from tokensieve.lm import chat_prompt_ids, check_context, end_of_turn_ids
    from tokensieve.models import load_model, with_cache

    budget = parse_budget(args.budget)
    context = read_text_file(args.file) if args.file else ""
    question = args.prompt or ""
    if not (context + question).strip():
        raise UserError("nothing to read: give --file and/or --prompt")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    policy = make_kv_policy(
        args.policy,
        budget,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        sink=args.sink,
        recent=args.recent,
        reuse_threshold=args.reuse_threshold,
        prefill=args.prefill,
    )
    device = checked_device(args.device)
    model, tokenizer = load_model(args.model)
    model.to(device)
    text = f"{context}\n\n{question}".strip()
    ids = chat_prompt_ids(tokenizer, text)
    check_context(model, len(ids) + args.max_new_tokens,
                  "shorten the --file text or lower --max-new-tokens")  # fmt: skip
    cache = CompressedCache(model.config, policy)
    started = time.perf_counter()
    with torch.no_grad(), compression(model, cache):
        if policy.compresses == "before input":
            read_in_chunks(model, cache, ids[:-1])  # the memory stays within the budget
        output = model.generate(
            torch.tensor([ids], device=model.device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
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
    state = cache.policy_state
    if hasattr(state, "reused"):  # TokenSelect's selection cache
        print(f"selections: {state.computed} computed, {state.reused} reused", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    import torch

    from tokensieve.kv.fidelity import kv_fidelity
    from tokensieve.models import cache_root, load_model
    from tokensieve.outputs import check_output, fresh_directory, write_atomic

    budgets = [parse_budget(b) for b in args.budgets]
    if args.context < 2 or args.decode < 1:
        raise UserError("--context must be at least 2 and --decode at least 1")
    if args.passkey_cases < 0 or args.multiturn_cases < 0:
        raise UserError("--passkey-cases and --multiturn-cases must not be negative")
    if args.multiturn_cases and (not 2 <= args.multiturn_turns <= MAX_TURNS
                                 or args.multiturn_tokens < 32):  # fmt: skip
        raise UserError(f"a conversation has 2 to {MAX_TURNS} turns (--multiturn-turns) of at "
                        "least 32 tokens (--multiturn-tokens)")  # fmt: skip
    if (args.prefill or args.reuse_threshold is not None) and "tokenselect" not in args.policies:
        raise UserError("--prefill and --reuse-threshold are TokenSelect's; add tokenselect "
                        "to --policies")  # fmt: skip
    for name in args.policies:  # validate names and options before the slow part
        _eval_policy(name, budgets[0], args)
    if args.out is not None:
        check_output(args.out, [args.model, args.file, cache_root()])
    text = read_text_file(args.file) if args.file else _python_reference()
    device = checked_device(args.device)
    model, tokenizer = load_model(args.model)
    if args.passkey_cases and not getattr(tokenizer, "chat_template", None):  # before the slow part
        raise UserError("the model has no chat template and passkey prompts are chat turns: "
                        "give --passkey-cases 0")  # fmt: skip
    model.to(device)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: args.context + args.decode]
    if len(ids) < args.context + 1:
        raise UserError(f"the text has {len(ids)} tokens; --context {args.context} needs more")
    rows = []
    tokens = torch.tensor(ids, device=model.device)
    for budget in budgets:
        policies = [_eval_policy(name, budget, args) for name in args.policies]
        for result in kv_fidelity(model, tokens, args.context, policies, not args.quiet):
            if result.policy == "full" and rows:
                continue
            row = {**result.__dict__, "budget": budget if result.policy != "full" else 1.0}
            if args.passkey_cases:
                row["passkey_accuracy"] = _passkey(model, tokenizer, text, result.policy,
                                                   budget, args)  # fmt: skip
            if args.multiturn_cases:
                row["multiturn_accuracy"] = _multiturn(model, tokenizer, text, result.policy,
                                                       budget, args)  # fmt: skip
            rows.append(row)
            _print_row(row, args.passkey_cases)
    if args.out:
        directory = fresh_directory(args.out)
        write_atomic(directory / "kv-eval.json", json.dumps(rows, indent=1))
        print(f"results          {directory / 'kv-eval.json'}")
    return 0


def cmd_stream(args) -> int:
    import torch

    from tokensieve.kv.stream import check_stream, stream_perplexity
    from tokensieve.lm import context_length
    from tokensieve.models import cache_root, load_model
    from tokensieve.outputs import check_output, json_text, write_directory

    budget = parse_budget(args.budget)
    policy = make_kv_policy(args.policy, budget, seed=args.seed, sink=args.sink)
    if args.max_tokens is not None and args.max_tokens < 2:
        raise UserError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    if args.out is not None:
        check_output(args.out, [args.model, args.file, cache_root()])
    text = read_text_file(args.file)
    if not text.strip():
        raise UserError(f"'{args.file}' is empty: nothing to read")
    model, tokenizer = load_model(args.model)
    check_stream(model, policy, args.pos_shift, args.chunk, args.window)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: args.max_tokens]
    result = stream_perplexity(model, torch.tensor(ids), policy, args.pos_shift, args.chunk,
                               args.window, progress=not args.quiet)  # fmt: skip
    window = context_length(model)
    figures = {**result.__dict__, "tokens": len(ids), "context_window": window}
    if args.json:
        print(json_text(figures))
    else:
        for read, ppl in zip(result.tokens_read, result.window_perplexity, strict=True):
            print(f"{read:>9} tokens read  perplexity {ppl:8.2f}")
        shift = "re-rotated" if result.pos_shift else "original positions"
        print(
            f"{result.policy} (budget {result.budget}, {shift}): perplexity "
            f"{result.perplexity:.2f} over {len(ids)} tokens; {result.kept} kept; "
            f"largest position {result.max_position} (window {window})"
        )
    if args.out:
        directory = write_directory(args.out, {"stream.json": json_text(figures),
                                               "stream.png": _stream_plot(result)})  # fmt: skip
        print(f"results          {directory}", file=sys.stderr)
    return 0


def _stream_plot(result) -> bytes:
    import matplotlib.pyplot as plt

    from tokensieve.report.plots import png_bytes

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(result.tokens_read, result.window_perplexity, marker=".")
    ax.set_xlabel("tokens read")
    ax.set_ylabel("perplexity per window")
    ax.set_yscale("log")
    shift = "re-rotated" if result.pos_shift else "original positions"
    ax.set_title(f"{result.policy}, budget {result.budget}, {shift}")
    return png_bytes(fig)


def _python_reference() -> str:
    """The default text: the Python Language Reference as the standard library ships it."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _passkey(model, tokenizer, text: str, name: str, budget, args) -> float:
    from tokensieve.kv.passkey import make_passkey_case, passkey_accuracy

    cases = [
        make_passkey_case(
            tokenizer, text, args.passkey_tokens, (i + 0.5) / args.passkey_cases, args.seed + i
        )  # fmt: skip
        for i in range(args.passkey_cases)
    ]
    policy = None if name == "full" else _eval_policy(name, budget, args)
    return passkey_accuracy(model, tokenizer, cases, policy, mode=args.passkey_mode)[0]


def _multiturn(model, tokenizer, text: str, name: str, budget, args) -> dict[int, float]:
    from tokensieve.kv.multiturn import make_conversation, turn_accuracy

    conversations = [
        make_conversation(
            tokenizer, text, args.multiturn_turns, args.multiturn_tokens, seed=args.seed + i
        )  # fmt: skip
        for i in range(args.multiturn_cases)
    ]
    policy = None if name == "full" else _eval_policy(name, budget, args)
    return turn_accuracy(model, tokenizer, conversations, policy, progress=not args.quiet)


def _print_row(row: dict, passkey: bool) -> None:
    turns = row.get("multiturn_accuracy")
    print(
        f"{row['policy']:>10} budget {row['budget']:<5} ppl {row['perplexity']:7.2f}  "
        f"KL {row['kl_to_full']:.4f}  top1 {row['top1_agreement']:.3f}  "
        f"KV {row['kv_bytes'] / 2**20:6.1f} MiB"
        + (f"  passkey {row['passkey_accuracy']:.2f}" if passkey else "")
        + (f"  multi-turn {'/'.join(f'{v:.2f}' for v in turns.values())}" if turns else "")
    )


def _eval_policy(name, budget, args):
    selection = {"reuse_threshold": args.reuse_threshold, "prefill": args.prefill}
    if name != "tokenselect":
        selection = {}  # TokenSelect's options apply to it among the --policies
    return make_kv_policy(name, budget, seed=args.seed, max_new_tokens=args.decode, **selection)


def add_selection_options(parser) -> None:
    parser.add_argument(
        "--reuse-threshold", type=float,
        help="TokenSelect's selection cache: reuse the last selection while the query's "
        "cosine similarity to it is at least this (0-1; default off)",
    )  # fmt: skip
    parser.add_argument(
        "--prefill", choices=("full", "sparse"),
        help="TokenSelect's prefill: full attention (default) or chunks of 512 rows that "
        "each attend to a selection",
    )  # fmt: skip


def register(commands) -> None:
    from tokensieve.commandline import Parser

    kv = commands.add_parser("kv", help="KV-cache compression: keep only the key tokens")
    kv_commands = kv.add_subparsers(dest="kv_command", required=True, parser_class=Parser)
    gen = kv_commands.add_parser(
        "generate",
        help="answer with a compressed KV cache",
        description="Read a long "
        "context with a KV policy evicting all but the key tokens, then answer greedily.",
    )
    gen.add_argument("--policy", choices=sorted(POLICIES), default="keyformer")
    gen.add_argument("--budget", default="0.2", help="fraction of the prompt (0.2) or tokens (512)")
    gen.add_argument("--file", help="the long context (UTF-8 text)")
    gen.add_argument("--prompt", help="the question asked after the context")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--sink", type=int, help="first tokens always kept")
    gen.add_argument("--recent", type=int, help="last tokens always kept")
    add_selection_options(gen)
    add_common(gen, "model", "seed", "quiet", "device")
    gen.set_defaults(run=cmd_generate)

    ev = kv_commands.add_parser(
        "eval", help="fidelity to the full cache and passkey retrieval, per policy and budget"
    )
    ev.add_argument("--policies", nargs="+", choices=sorted(POLICIES), default=EVAL_POLICIES)
    ev.add_argument("--budgets", nargs="+", default=["0.1", "0.2", "0.3", "0.5"])
    ev.add_argument("--file", help="real text to decode (default: the Python reference)")
    ev.add_argument("--context", type=int, default=512, help="tokens read before decoding")
    ev.add_argument("--decode", type=int, default=64, help="tokens decoded teacher-forced")
    ev.add_argument("--passkey-cases", type=int, default=0)
    ev.add_argument("--passkey-tokens", type=int, default=1024)
    ev.add_argument(
        "--passkey-mode", choices=("aware", "agnostic"), default="aware",
        help="aware: the question is read with the context; agnostic: the context is "
        "compressed alone, the question appended after",
    )  # fmt: skip
    ev.add_argument(
        "--multiturn-cases", type=int, default=0,
        help="conversations whose turns alternate a fact and a question about it, read "
        "through one cache (accuracy per asking turn; budgets are shares of a conversation)",
    )  # fmt: skip
    ev.add_argument("--multiturn-turns", type=int, default=6, help="turns per conversation")
    ev.add_argument("--multiturn-tokens", type=int, default=300, help="text tokens per turn")
    add_selection_options(ev)
    add_common(ev, "model", "seed", "quiet", "device")
    ev.add_argument("--out", help="directory for kv-eval.json (a fresh one if taken)")
    ev.set_defaults(run=cmd_eval)

    st = kv_commands.add_parser(
        "stream",
        help="perplexity of a text longer than the context, read through a bounded cache",
        description="Read a long text chunk by chunk through a cache the policy keeps at its "
        "budget (StreamingLLM's setting) and report perplexity per window.",
    )
    st.add_argument("--policy", choices=sorted(POLICIES), default="streaming")
    st.add_argument("--file", required=True, help="the text (UTF-8; '-' reads stdin)")
    st.add_argument("--budget", default="1024", help="tokens kept per layer and head (1024)")
    st.add_argument("--sink", type=int, help="first tokens always kept (streaming: 4)")
    st.add_argument(
        "--pos-shift", action=argparse.BooleanOptionalAction, default=True,
        help="positions are ranks in the cache, kept keys re-rotated (StreamingLLM's; "
        "default, for every policy here); --no-pos-shift keeps positions in the text",
    )  # fmt: skip
    st.add_argument("--chunk", type=int, default=32, help="tokens read per forward (32)")
    st.add_argument("--window", type=int, default=1024, help="tokens per perplexity window")
    st.add_argument("--max-tokens", type=int, help="read only the first N tokens")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--out", help="directory for stream.json and stream.png (a fresh one)")
    add_common(st, "model", "seed", "quiet")
    st.set_defaults(run=cmd_stream)
