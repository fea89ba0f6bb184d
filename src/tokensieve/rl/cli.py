"""`tokensieve rl …`: train on a verifiable task, evaluate, compare runs."""

from __future__ import annotations

import json
from pathlib import Path

from tokensieve.commandline import (
    Parser,
    add_common,
    add_dataclass_options,
    config_from_args,
    seed_option,
)
from tokensieve.errors import UserError
from tokensieve.rl.config import RunConfig
from tokensieve.rl.tasks import TASKS


def cmd_train(args) -> int:
    from tokensieve.rl.run import train

    config = config_from_args(RunConfig, args)
    final = train(config, args.out, progress=not args.quiet)
    print(
        f"trained {config.steps} steps; model in {final}, metrics in {Path(args.out)}/metrics.jsonl"
    )
    return 0


def cmd_eval(args) -> int:
    from tokensieve.models import load_model
    from tokensieve.rl.run import check_evaluation, test_accuracy

    check_evaluation(args.problems, args.max_new_tokens, args.temperature, args.top_p)
    model, tokenizer = load_model(args.model)
    accuracy, _ = test_accuracy(
        model, tokenizer, args.task, args.problems, args.max_new_tokens, args.temperature,
        args.seed, progress=not args.quiet, top_p=args.top_p,
    )  # fmt: skip
    result = {"task": args.task, "model": args.model or "embedded", "problems": args.problems,
              "temperature": args.temperature, "top_p": args.top_p,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed,
              "test_accuracy": accuracy}  # fmt: skip
    print(json.dumps(result) if args.json else f"{args.task}: test accuracy {accuracy:.3f}")
    return 0


def cmd_compare(args) -> int:
    from tokensieve.models import cache_root
    from tokensieve.outputs import check_output, write_directory
    from tokensieve.rl import plots
    from tokensieve.rl.run import read_config, read_metrics

    if args.problems < 1:
        raise UserError("--problems must be at least 1")
    check_output(args.out, [*args.runs, cache_root()])
    if any(Path(r).name == "base" for r in args.runs):  # the analysis's name for the base model
        raise UserError("a run directory named 'base' would be taken for the base model: rename it")
    runs = {Path(r).name: read_metrics(Path(r)) for r in args.runs}
    if len(runs) != len(args.runs):
        raise UserError("run directories must have distinct names")
    figures = {"rl-curves.png": plots.curves(runs)}
    summary = {"runs": {name: _last_values(rows) for name, rows in runs.items()}}
    finals = [Path(r) / "final" for r in args.runs]
    if args.analysis and all(f.is_dir() for f in finals):
        analysis = _analyse(args, [read_config(Path(r)) for r in args.runs], finals)
        figures["rl-entropy-histogram.png"] = plots.entropy_histograms(analysis)
        figures["rl-forks.png"] = plots.forks(analysis)
        summary["forking"] = analysis.summary()
    text = json.dumps(summary, indent=1, ensure_ascii=False) + "\n"
    directory = write_directory(args.out, {**figures, "summary.json": text})
    for name, last in summary["runs"].items():
        print(f"{name:>20}  " + "  ".join(f"{k} {v:.4g}" for k, v in last.items()))
    for name, row in summary.get("forking", {}).items():
        if row["overlap_with_base"] is not None and name != "base":
            print(f"{name:>20}  overlap with the base model's forks {row['overlap_with_base']:.3f}")
    print(f"plots in {directory}")
    return 0


def _last_values(rows: list[dict]) -> dict:
    """The last logged value of each headline metric."""
    keys = ("step", "reward", "entropy", "test_accuracy")
    return {
        k: next(r[k] for r in reversed(rows) if k in r) for k in keys if any(k in r for r in rows)
    }


def _analyse(args, configs, finals):
    """The overlap analysis: the runs' common base model and task, every final model."""
    from tokensieve.models import load_model
    from tokensieve.rl.analysis import analyse

    if len({(c.model, c.task) for c in configs}) != 1:
        raise UserError(
            "the runs start from different models or tasks: compare them with --no-analysis"
        )
    base, tokenizer = load_model(configs[0].model)
    models = {"base": base}
    for final in finals:
        models[final.parent.name] = load_model(str(final))[0]
    return analyse(models, tokenizer, configs[0].task, problems=args.problems,
                   max_new_tokens=configs[0].max_new_tokens, progress=not args.quiet)  # fmt: skip


def register(commands) -> None:
    rl = commands.add_parser("rl", help="RL with verifiable rewards on the forking tokens")
    sub = rl.add_subparsers(dest="rl_command", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="GRPO (TRL) with the policy gradient on selected tokens")
    t.add_argument("--out", required=True, help="run directory (resumed if it holds the run)")
    add_dataclass_options(t, RunConfig)
    t.add_argument(
        "--plain-trl", dest="implementation", action="store_const", const="trl",
        help="TRL's own GRPOTrainer, unchanged: --mask all is the all-token anchor, "
        "--mask top-entropy its top_entropy_quantile flag at --rho",
    )  # fmt: skip
    add_common(t, "quiet")
    t.set_defaults(run=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a model on a task")
    e.add_argument("--task", required=True, choices=TASKS)
    e.add_argument("--model", help="model directory (e.g. RUN/final; default: embedded)")
    e.add_argument("--problems", type=int, default=64, help="(default 64, as rl train's)")
    e.add_argument("--max-new-tokens", type=int, default=96)
    e.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    e.add_argument("--top-p", type=float, default=1.0,
                   help="(default 1.0: rl train's sampling, as its test_accuracy)")  # fmt: skip
    e.add_argument("--seed", type=seed_option, default=0)
    e.add_argument("--json", action="store_true")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(run=cmd_eval)

    c = sub.add_parser("compare", help="plot runs' metrics side by side")
    c.add_argument("runs", nargs="+", help="run directories")
    c.add_argument("--out", default="reports/rl-compare", help="directory (a fresh one if taken)")
    c.add_argument(
        "--no-analysis",
        dest="analysis",
        action="store_false",
        help="skip the forking-token analysis (it loads every final model)",
    )
    c.add_argument("--problems", type=int, default=32, help="test problems the analysis scores")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(run=cmd_compare)
