"""`tokensieve vocab …`: transplant a tokenizer, train one, measure bits per byte."""

from __future__ import annotations

import json

from tokensieve.commandline import Parser, read_text_file, seed_option
from tokensieve.errors import UserError
from tokensieve.vocab import METHODS


def _texts(files: list[str]) -> list[str]:
    texts = [read_text_file(name) for name in files]
    if not any(t.strip() for t in texts):
        raise UserError("the given files hold no text")
    return texts


def cmd_transplant(args) -> int:
    from tokensieve.models import load_model, load_tokenizer
    from tokensieve.vocab import transplant
    from tokensieve.vocab.transplant import check_model_output, save_model

    if args.tokenizer is None and args.donor is None:
        raise UserError("give --tokenizer (or --donor, whose tokenizer is then used)")
    given = [args.model, args.tokenizer, args.donor]
    out = check_model_output(args.out, [], args.force, extra=given)  # before the slow part
    new_tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    donor_rows = None
    if args.donor:
        donor, donor_tokenizer = load_model(args.donor)
        donor_rows = donor.get_input_embeddings().weight.detach()
        new_tokenizer = new_tokenizer or donor_tokenizer
        if len(new_tokenizer) > donor_rows.shape[0]:
            raise UserError(
                f"the donor has {donor_rows.shape[0]} embedding rows but the tokenizer "
                f"{len(new_tokenizer)} tokens: they do not belong together"
            )
    model, old_tokenizer = load_model(args.model)
    out = check_model_output(out, [model, old_tokenizer, new_tokenizer], args.force, extra=given)
    options = {
        "space": args.aux,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "weight": args.weight,
        "k": args.k,
        "donor_rows": donor_rows,
    }
    new = transplant(model, old_tokenizer, new_tokenizer, args.method, seed=args.seed,
                     **options)  # fmt: skip
    save_model(new, new_tokenizer, out, replace=args.force)
    print(f"{args.method}: {len(old_tokenizer)} → {len(new_tokenizer)} tokens, written to {out}")
    return 0


def cmd_train_tokenizer(args) -> int:
    from tokensieve.models import cache_root, load_model
    from tokensieve.outputs import check_output, new_directory
    from tokensieve.vocab.train_tokenizer import bytes_per_token, train_tokenizer

    given = [*args.corpus, *(args.held_out or []), args.base_model, cache_root()]
    check_output(args.out, given)
    texts = _texts(args.corpus)
    held = _texts(args.held_out) if args.held_out else texts
    _, base = load_model(args.base_model)
    tokenizer = train_tokenizer(
        texts,
        args.vocab_size,
        supertokens=args.supertokens,
        recipe=args.recipe,
        base_tokenizer=base,
        seed=args.seed,
    )
    with new_directory(args.out) as (staging, directory):
        tokenizer.save_pretrained(staging)
    kind = f"supertoken BPE ({args.recipe} chunks)" if args.supertokens else "BPE"
    print(f"{kind} with {len(tokenizer)} tokens written to {directory}")
    print(f"bytes per token{' (held-out)' if args.held_out else ''}:")
    print(f"  trained   {bytes_per_token(tokenizer, held):.3f}")
    print(f"  base      {bytes_per_token(base, held):.3f} ({len(base)} tokens)")
    return 0


def cmd_eval(args) -> int:
    from tokensieve.models import load_model
    from tokensieve.vocab.bits_per_byte import bits_per_byte

    texts = _texts(args.file)
    rows = []
    for spec in args.model or [None]:
        model, tokenizer = load_model(spec)
        result = bits_per_byte(model, tokenizer, texts, progress=not args.quiet)
        rows.append({"model": spec or "embedded", **result.__dict__})
        print(
            f"{spec or 'embedded':>30}  {result.bits_per_byte:.4f} bits/byte  "
            f"{result.bytes_per_token:.2f} bytes/token"
            + ("" if result.lossless else "  (tokenizer not lossless on this text)")
        )
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def cmd_finetune(args) -> int:
    import torch

    from tokensieve.models import load_model
    from tokensieve.vocab.bits_per_byte import bits_per_byte
    from tokensieve.vocab.finetune import check_options, finetune_embeddings
    from tokensieve.vocab.transplant import check_model_output, save_model

    check_options(args.steps, args.batch_size, args.length, args.lr, args.eval_every)
    given = [args.model, *args.file, *(args.held_out or [])]
    out = check_model_output(args.out, [], args.force, extra=given)  # before the slow part
    texts = _texts(args.file)
    held = _texts(args.held_out) if args.held_out else None
    model, tokenizer = load_model(args.model)
    out = check_model_output(out, [model, tokenizer], args.force)
    torch.manual_seed(args.seed)  # dropout, where a model has any

    def evaluate(m) -> float:
        return bits_per_byte(m, tokenizer, held).bits_per_byte

    log = finetune_embeddings(
        model, tokenizer, texts, steps=args.steps, batch_size=args.batch_size,
        length=args.length, lr=args.lr, seed=args.seed,
        evaluate=evaluate if held else None, eval_every=args.eval_every,
        progress=not args.quiet,
    )  # fmt: skip
    save_model(model, tokenizer, out, replace=args.force)
    for step, value in log.evaluations:
        print(f"step {step:>5}  held-out {value:.4f} bits/byte")
    last = f"{log.losses[-1]:.3f}" if log.losses else "n/a"
    print(f"{args.steps} steps (last training loss {last}), written to {out}")
    return 0


def register(commands) -> None:
    vocab = commands.add_parser("vocab", help="give a model a new tokenizer; supertokens")
    sub = vocab.add_subparsers(dest="vocab_command", required=True, parser_class=Parser)
    t = sub.add_parser("transplant", help="write the model with a new tokenizer's vocabulary")
    t.add_argument("--model", help="local HF model directory or .gguf (default: embedded)")
    t.add_argument("--tokenizer", help="directory, tokenizer.json or .gguf of the new tokenizer")
    t.add_argument("--method", choices=METHODS, default="tokenadapt")
    t.add_argument("--out", required=True, help="new model directory (new or empty)")
    t.add_argument("--force", action="store_true", help="replace --out if it exists")
    t.add_argument("--aux", default="auto", choices=["auto", "minilm", "embeddings"],
                   help="auxiliary space (auto: all-MiniLM-L6-v2 when installed)")  # fmt: skip
    t.add_argument("--donor", help="omp: a model whose embeddings speak the new tokenizer")
    t.add_argument("--temperature", type=float, help="tokenadapt τ (0.3)")
    t.add_argument("--top-k", type=int, help="tokenadapt global neighbours (3)")
    t.add_argument("--weight", type=float, help="tokenadapt global weight λ (0.3)")
    t.add_argument("--k", type=int, help="omp atoms per token (64)")
    t.add_argument("--seed", type=seed_option, default=0)
    t.set_defaults(run=cmd_transplant)

    tr = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer")
    tr.add_argument("--corpus", nargs="+", required=True, help="UTF-8 text files")
    tr.add_argument("--vocab-size", type=int, required=True)
    tr.add_argument("--supertokens", action="store_true", help="merges may cross words")
    tr.add_argument("--recipe", choices=("chars", "words"), default="chars",
                    help="supertoken chunks: random character lengths (the reference's) "
                    "or runs of whole words")  # fmt: skip
    tr.add_argument("--held-out", nargs="+", help="files for the compression report")
    tr.add_argument("--base-model", help="special tokens and chat template from this model")
    tr.add_argument("--out", required=True, help="tokenizer directory (a fresh one if taken)")
    tr.add_argument("--seed", type=seed_option, default=0)
    tr.set_defaults(run=cmd_train_tokenizer)

    f = sub.add_parser("finetune", help="train only the embeddings and head (heal a transplant)")
    f.add_argument("--model", help="local HF model directory or .gguf (default: embedded)")
    f.add_argument("--file", nargs="+", required=True, help="UTF-8 training text files")
    f.add_argument("--held-out", nargs="+", help="files for bits per byte during training")
    f.add_argument("--out", required=True, help="new model directory (new or empty)")
    f.add_argument("--force", action="store_true", help="replace --out if it exists")
    f.add_argument("--steps", type=int, default=50)
    f.add_argument("--batch-size", type=int, default=4)
    f.add_argument("--length", type=int, default=256, help="tokens per training window")
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--eval-every", type=int, default=0, help="held-out bpb every N steps")
    f.add_argument("--seed", type=seed_option, default=0)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(run=cmd_finetune)

    e = sub.add_parser("eval", help="bits per byte of real text, any tokenizer")
    e.add_argument("--model", nargs="+", help="model directories (default: embedded)")
    e.add_argument("--file", nargs="+", required=True, help="UTF-8 text files")
    e.add_argument("--json", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(run=cmd_eval)
