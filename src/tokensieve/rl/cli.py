"""`tokensieve rl …`: train on a verifiable task, evaluate, compare runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

from tokensieve.errors import UserError


def cmd_train(args) -> int:
    from tokensieve.rl.run import RunConfig, train

    config = RunConfig(
        task=args.task, mask=args.mask, rho=args.rho, steps=args.steps, model=args.model,
        seed=args.seed, group_size=args.group_size, prompts_per_step=args.prompts_per_step,
        max_new_tokens=args.max_new_tokens, learning_rate=args.learning_rate,
        temperature=args.temperature, epsilon_high=args.epsilon_high,
        save_every=args.save_every,
    )  # fmt: skip
    final = train(config, args.out, progress=not args.quiet)
    print(
        f"trained {config.steps} steps; model in {final}, metrics in {Path(args.out)}/metrics.jsonl"
    )
    return 0


def cmd_eval(args) -> int:
    from tokensieve.models import load_model
    from tokensieve.rl.run import test_accuracy

    if args.problems < 1:
        raise UserError("--problems must be at least 1")
    model, tokenizer = load_model(args.model)
    accuracy, _ = test_accuracy(
        model, tokenizer, args.task, args.problems, args.max_new_tokens, args.temperature,
        args.seed, progress=not args.quiet,
    )  # fmt: skip
    result = {"task": args.task, "model": args.model or "embedded", "problems": args.problems,
              "temperature": args.temperature, "test_accuracy": accuracy}  # fmt: skip
    print(json.dumps(result) if args.json else f"{args.task}: test accuracy {accuracy:.3f}")
    return 0


def cmd_compare(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokensieve.outputs import fresh_directory, write_atomic
    from tokensieve.rl.run import read_metrics

    runs = {Path(r).name: read_metrics(Path(r)) for r in args.runs}
    panels = [("reward", "train reward (accuracy)"), ("entropy", "mean token entropy (nats)"),
              ("tokensieve/selected_fraction", "share of tokens trained on")]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, rows in runs.items():
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    directory = fresh_directory(args.out)
    write_atomic(directory / "rl-compare.png", buffer.getvalue())
    summary = {
        name: {k: rows[-1][k] for k in ("step", "reward", "entropy") if rows and k in rows[-1]}
        for name, rows in runs.items()
    }
    write_atomic(directory / "summary.json", json.dumps(summary, indent=1) + "\n")
    for name, last in summary.items():
        print(f"{name:>20}  " + "  ".join(f"{k} {v:.4g}" for k, v in last.items()))
    print(f"plots in {directory}")
    return 0


def register(commands, parser_class) -> None:
    from tokensieve.rl.run import TRAINER_MASKS
    from tokensieve.rl.tasks import TASKS

    rl = commands.add_parser("rl", help="RL with verifiable rewards on the forking tokens")
    sub = rl.add_subparsers(dest="rl_command", required=True, parser_class=parser_class)
    t = sub.add_parser("train", help="GRPO (TRL) with the policy gradient on selected tokens")
    t.add_argument("--task", required=True, help=f"one of {', '.join(sorted(TASKS))}")
    t.add_argument("--mask", default="top-entropy", help=f"one of {', '.join(TRAINER_MASKS)}")
    t.add_argument("--rho", type=float, default=0.2, help="share of tokens selected")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--out", required=True, help="run directory (resumed if it holds the run)")
    t.add_argument("--model", help="local HF model directory or .gguf (default: embedded)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--group-size", type=int, default=4)
    t.add_argument("--prompts-per-step", type=int, default=2)
    t.add_argument("--max-new-tokens", type=int, default=96)
    t.add_argument("--learning-rate", type=float, default=1e-6)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--epsilon-high", type=float, default=0.28, help="clip-higher (0.2: off)")
    t.add_argument("--save-every", type=int, default=10, help="checkpoint every N steps")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(run=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a model on a task")
    e.add_argument("--task", required=True)
    e.add_argument("--model", help="model directory (e.g. RUN/final; default: embedded)")
    e.add_argument("--problems", type=int, default=32)
    e.add_argument("--max-new-tokens", type=int, default=96)
    e.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(run=cmd_eval)

    c = sub.add_parser("compare", help="plot runs' metrics side by side")
    c.add_argument("runs", nargs="+", help="run directories")
    c.add_argument("--out", default="reports/rl-compare", help="directory (a fresh one if taken)")
    c.set_defaults(run=cmd_compare)
