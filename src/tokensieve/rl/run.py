"""A training run on disk: configuration, checkpoints, metrics as JSON lines; resumable.

``<out>/run.json`` fixes the configuration when a run starts (written only once the
configuration is valid); a directory is a run's because it holds run.json, and no other
non-empty directory is adopted. Running again with the same directory resumes from the
newest *complete* checkpoint (``checkpoint-N`` with the optimiser, scheduler and RNG
states) and refuses a different configuration. TRL writes a checkpoint in place; when it
is done, a callback marks it complete (``tokensieve-complete.json``, written atomically),
so a kill during a save leaves an unmarked directory that the next run removes and
never resumes from. Metrics TRL logs each step go to ``<out>/metrics.jsonl``; lines
written after the checkpoint a run resumes from are dropped first (and a line cut by a
kill is skipped), so an interruption loses nothing and repeats nothing. The final model
is staged and renamed to ``<out>/final``; a run that has it is finished, and running it
again changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path

from tokensieve.errors import UserError, check_sampling, first_line
from tokensieve.outputs import check_output, follow_umask, pause_point, write_atomic
from tokensieve.rl.config import RunConfig
from tokensieve.rl.rollouts import require_chat_template
from tokensieve.rl.tasks import get_task


def check_config(out: Path, config: RunConfig) -> str:
    """What `out` holds for this run: ``"new"`` (missing or empty), ``"resume"`` or
    ``"finished"`` (run.json with the same configuration; ``final/`` present). Any other
    directory is the user's and is refused; nothing is written here."""
    path = out / "run.json"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a run directory")
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise UserError(
                f"{out} holds files but no run.json, so it is not a tokensieve rl run; "
                "choose a new `out`"
            )
        return "new"
    saved = _read_json(path)
    # A field a run.json predates had its default then.
    changed = [
        f"{f.name} {saved.get(f.name, f.default)!r} → {getattr(config, f.name)!r}"
        for f in fields(config)
        if saved.get(f.name, f.default) != getattr(config, f.name)
    ]
    if changed:
        raise UserError(
            f"{out} holds a run with a different configuration ({'; '.join(changed)}); "
            "resume it with the same options or choose a new `out`"
        )
    return "finished" if (out / "final").is_dir() else "resume"


def start_run(out: Path, config: RunConfig) -> None:
    """Write run.json: from now on `out` is this run's (called once the model loaded)."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "run.json", json.dumps(asdict(config), indent=1) + "\n")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a tokensieve run file")
    return value


def last_complete_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint marked complete; unmarked ones (a save cut by a kill) are
    removed, as they are this run's own half-written files.

    Runs written before the marker existed have no marked checkpoint at all: there, a
    checkpoint whose trainer_state.json (TRL writes it last) reads back counts."""
    steps = {}
    for directory in out.glob("checkpoint-*"):
        step = directory.name.removeprefix("checkpoint-")
        if directory.is_dir() and step.isdigit():
            steps[int(step)] = directory
    marked = {n: d for n, d in steps.items() if (d / "tokensieve-complete.json").is_file()}
    if not marked:  # see rl/callbacks.py for the marker
        marked = {n: d for n, d in steps.items() if _legacy_complete(d, n)}
    for step, directory in steps.items():
        if step not in marked:
            shutil.rmtree(directory, ignore_errors=True)
    return marked[max(marked)] if marked else None


def _legacy_complete(directory: Path, step: int) -> bool:
    try:
        state = json.loads((directory / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == step


def trim_metrics(path: Path, step: int) -> None:
    """Keep only metrics of steps ≤ `step` (those a resumed run will not repeat)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by the interruption
            continue
    write_atomic(path, "".join(k + "\n" for k in kept))


def read_config(out: Path) -> RunConfig:
    path = Path(out) / "run.json"
    if not path.is_file():
        raise UserError(f"{out} has no run.json: not a tokensieve rl run")
    saved = _read_json(path)
    try:
        return RunConfig(**{f.name: saved[f.name] for f in fields(RunConfig) if f.name in saved})
    except TypeError as exc:  # a field missing: a hand-made or foreign run.json
        raise UserError(f"{path} is not a tokensieve run file ({exc})") from None


def read_metrics(out: Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{out} has no metrics.jsonl: not a tokensieve rl run")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if not isinstance(row, dict):
            continue
        # numbers only (an edited or foreign file may hold others), and a step to plot at
        row = {k: v for k, v in row.items() if _is_number(v)}
        if "step" in row:
            rows.append(row)
    return rows


def _is_number(value) -> bool:
    # NaN stays: a diverged loss is worth seeing
    return isinstance(value, int | float) and not isinstance(value, bool)


def train(config: RunConfig, out: str | Path, progress: bool = True) -> Path:
    """Train (or resume) the run in `out`; returns the final model's directory.

    A finished run (one with ``final/``) is returned as it is, without training again."""
    from tokensieve.models import cache_root, load_model

    config.validate()
    out = check_output(out, [config.model, cache_root()])
    args = _grpo_args(config, out, progress)  # TRL's own checks, before run.json is written
    state = check_config(out, config)
    if state == "finished":
        return out / "final"
    model, tokenizer = load_model(config.model)
    require_chat_template(tokenizer)
    if state == "new":  # only a configuration that loads and can train claims `out`
        start_run(out, config)
    trainer = _trainer(config, out, args, model, tokenizer)
    last = last_complete_checkpoint(out)
    metrics = out / "metrics.jsonl"
    if last is not None:
        trim_metrics(metrics, int(last.name.split("-")[-1]))
    else:
        metrics.unlink(missing_ok=True)
    try:
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    except OSError as exc:  # a checkpoint or a log line that could not be written
        raise UserError(
            f"could not write in {out}: {exc.strerror or exc}; run the same "
            "command again to resume from the last complete checkpoint"
        ) from None
    except RuntimeError as exc:  # torch.save's zip writer when the disk fills up
        if "unexpected pos" not in str(exc) and "PytorchStreamWriter" not in str(exc):
            raise
        raise UserError(
            f"could not write a checkpoint in {out} (is the disk full?); free "
            "space and run the same command again to resume"
        ) from None
    return _save_final(trainer, tokenizer, out)


def _grpo_args(config: RunConfig, out: Path, progress: bool):
    import torch
    from trl import GRPOConfig

    try:
        return GRPOConfig(
            output_dir=str(out),
            max_steps=config.steps,
            per_device_train_batch_size=config.group_size * config.prompts_per_step,
            num_generations=config.group_size,
            max_completion_length=config.max_new_tokens,
            learning_rate=config.learning_rate,
            temperature=config.temperature,
            top_p=config.top_p,
            epsilon=config.epsilon,
            epsilon_high=config.epsilon_high,
            num_iterations=config.num_iterations,
            # TRL's own flag for the paper's method, the anchor of `--mask top-entropy`
            top_entropy_quantile=(
                config.rho
                if config.implementation == "trl" and config.mask == "top-entropy"
                else 1.0
            ),
            steps_per_generation=config.steps_per_generation,
            logging_steps=1,
            save_strategy="steps",
            save_steps=config.save_every,
            save_total_limit=2,
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            bf16=False,
            seed=config.seed,
            disable_tqdm=not progress,
        )
    except ValueError as exc:  # TRL's and transformers' own checks of the values
        raise UserError(f"TRL refuses this configuration: {first_line(exc)}") from None


def _trainer(config: RunConfig, out: Path, args, model, tokenizer):
    """TRL's trainer (or ours) with the task's reward, our metrics log and markers."""
    import datasets
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    from tokensieve.rl.callbacks import MarkComplete, MetricsLog, TestAccuracy
    from tokensieve.rl.trainer import ForkingTokenGRPOTrainer

    task = get_task(config.task)
    count = config.steps * config.prompts_per_step
    problems = [task.problem("train", i) for i in range(count)]
    data = datasets.Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p.prompt}] for p in problems],
            "index": list(range(count)),
        }
    )

    def correct(completions, index, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [task.reward(t, problems[i]) for t, i in zip(texts, index, strict=True)]

    correct.__name__ = f"{config.task}_correct"
    callbacks = [MetricsLog(out / "metrics.jsonl"), MarkComplete()]
    if config.eval_every:
        callbacks.append(TestAccuracy(config, tokenizer, out / "metrics.jsonl"))
    common = dict(model=model, reward_funcs=correct, args=args, train_dataset=data,
                  processing_class=tokenizer, callbacks=callbacks)  # fmt: skip
    if config.implementation == "trl":
        trainer = GRPOTrainer(**common)
    else:
        trainer = ForkingTokenGRPOTrainer(
            **common, token_mask=config.token_mask(), seed=config.seed,
            normalize=config.loss_normalization,
        )  # fmt: skip
    if args.disable_tqdm:  # quiet: without a progress bar, TRL would print every log line
        trainer.remove_callback(PrinterCallback)
    return trainer


def _save_final(trainer, tokenizer, out: Path) -> Path:
    """Every process saves (ZeRO-3 gathers the weights); process 0 renames when complete.
    An interrupted save leaves no staging behind."""
    final, staging = out / "final", out / ".final.staging"
    try:
        trainer.save_model(str(staging))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(staging)
            follow_umask(staging)
            pause_point("final-saved")
            os.replace(staging, final)
        trainer.accelerator.wait_for_everyone()
    except BaseException:
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def check_evaluation(problems: int, max_new_tokens: int, temperature: float, top_p: float):
    """An evaluation's options, checked before any model loads."""
    if problems < 1:
        raise UserError(f"`problems` must be at least 1, got {problems}")
    if max_new_tokens < 1:
        raise UserError(f"`max_new_tokens` must be at least 1, got {max_new_tokens}")
    check_sampling(temperature, top_p)


def test_accuracy(
    model,
    tokenizer,
    task_name: str,
    problems: int = 32,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    top_p: float = 1.0,
) -> tuple[float, list[str]]:
    """Share of the first `problems` test problems answered correctly (sampling at
    `temperature` and `top_p`, greedy at 0), and the completions."""
    from tokensieve.rl.rollouts import complete

    check_evaluation(problems, max_new_tokens, temperature, top_p)
    task = get_task(task_name)
    items = [task.problem("test", i) for i in range(problems)]
    pairs = complete(
        model, tokenizer, items, max_new_tokens, temperature=temperature, top_p=top_p,
        seed=seed, batch_size=batch_size, progress=progress,
    )  # fmt: skip
    texts = [tokenizer.decode(c, skip_special_tokens=True) for _, c in pairs]
    correct = [task.reward(t, p) for t, p in zip(texts, items, strict=True)]
    return sum(correct) / max(len(items), 1), texts
