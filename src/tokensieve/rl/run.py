"""A training run on disk: configuration, checkpoints, metrics as JSON lines; resumable.

``<out>/run.json`` fixes the configuration when a run starts; running again with the
same directory resumes from the last checkpoint TRL saved (``checkpoint-N``, with the
optimiser, scheduler and RNG states) and refuses a different configuration. Metrics
TRL logs each step go to ``<out>/metrics.jsonl``; lines written after the checkpoint a
run resumes from are dropped first, so an interruption loses nothing and repeats
nothing. The final model is saved to ``<out>/final``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tokensieve.errors import UserError
from tokensieve.outputs import write_atomic
from tokensieve.rl.rollouts import require_chat_template
from tokensieve.rl.tasks import get_task
from tokensieve.rl.token_masks import MASKS

TRAINER_MASKS = tuple(MASKS)


@dataclass(frozen=True)
class RunConfig:
    task: str
    mask: str = "top-entropy"
    rho: float = 0.2
    steps: int = 200
    model: str | None = None  # None: the embedded model
    seed: int = 0
    group_size: int = 4  # completions per prompt (GRPO's group)
    prompts_per_step: int = 2
    max_new_tokens: int = 96
    learning_rate: float = 1e-6
    temperature: float = 1.0  # the paper's: entropies are those of the sampled policy
    top_p: float = 0.9  # nucleus sampling; the tasks' difficulty is tuned with it
    epsilon_high: float = 0.28  # clip-higher (DAPO); = 0.2 for symmetric clipping
    save_every: int = 10
    eval_every: int = 0  # test accuracy every N steps (and at 0 and the end); 0: never
    eval_problems: int = 64
    normalize: str = "all"  # loss over all response tokens (the paper's), or "selected"
    cov_ratio: float = 2e-4  # Clip-Cov / KL-Cov: share of tokens they act on
    implementation: str = "tokensieve"  # "trl": TRL's own GRPOTrainer, the all-token anchor

    def validate(self) -> None:
        get_task(self.task)
        if self.mask not in TRAINER_MASKS:
            raise UserError(f"unknown mask {self.mask!r}; choose {', '.join(TRAINER_MASKS)}")
        for name in ("rho", "cov_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise UserError(
                    f"{name.replace('_', '-')} must be in (0, 1], got {getattr(self, name)}"
                )
        if self.normalize not in ("all", "selected"):
            raise UserError("normalize must be 'all' or 'selected'")
        for name in ("steps", "group_size", "prompts_per_step", "max_new_tokens", "save_every",
                     "eval_problems"):  # fmt: skip
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1")
        if self.implementation not in ("tokensieve", "trl"):
            raise UserError("implementation must be 'tokensieve' or 'trl'")
        if self.implementation == "trl" and self.mask != "all":
            raise UserError("TRL's own trainer trains on every token: use it with --mask all")
        if self.eval_every < 0:
            raise UserError("eval-every must be 0 (never) or more")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise UserError("temperature must be positive (GRPO samples)")
        if self.group_size < 2:
            raise UserError("group-size must be at least 2 (GRPO compares completions)")

    def token_mask(self):
        cls = MASKS[self.mask]
        if self.mask in ("clip-cov", "kl-cov"):
            return cls(ratio=self.cov_ratio)
        return cls() if self.mask == "all" else cls(rho=self.rho)


def check_config(out: Path, config: RunConfig) -> None:
    """Write run.json for a new run; for an existing one, refuse a different config."""
    path = out / "run.json"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(config), indent=1) + "\n")
        return
    saved = json.loads(path.read_text())
    changed = [
        f"{f.name} {saved.get(f.name)!r} → {getattr(config, f.name)!r}"
        for f in fields(config)
        if saved.get(f.name) != getattr(config, f.name)
    ]
    if changed:
        raise UserError(
            f"{out} holds a run with a different configuration ({'; '.join(changed)}); "
            "resume it with the same options or choose a new --out"
        )


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
    saved = json.loads(path.read_text())
    return RunConfig(**{f.name: saved[f.name] for f in fields(RunConfig) if f.name in saved})


def read_metrics(out: Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{out} has no metrics.jsonl: not a tokensieve rl run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(config: RunConfig, out: str | Path, progress: bool = True) -> Path:
    """Train (or resume) the run in `out`; returns the final model's directory."""
    import datasets
    import torch
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from tokensieve.models import load_model
    from tokensieve.rl.trainer import ForkingTokenGRPOTrainer

    config.validate()
    out = Path(out)
    check_config(out, config)
    model, tokenizer = load_model(config.model)
    require_chat_template(tokenizer)
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
    metrics_path = out / "metrics.jsonl"

    def append(record: dict) -> None:
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    class MetricsLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                append({"step": state.global_step, **logs})

    class TestAccuracy(TrainerCallback):
        """Test accuracy at step 0, every `eval_every` steps and at the end, generated by
        process 0 alone (fine for one process or DDP; with ZeRO-3's sharded weights, evaluate
        the saved checkpoints with `rl eval` instead)."""

        def evaluate(self, state, model) -> None:
            if not state.is_world_process_zero:
                return
            model.eval()
            accuracy, _ = test_accuracy(
                model, tokenizer, config.task, config.eval_problems, config.max_new_tokens,
                config.temperature, seed=config.seed, top_p=config.top_p, progress=False,
            )  # fmt: skip
            model.train()
            append({"step": state.global_step, "test_accuracy": accuracy})

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                self.evaluate(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if step % config.eval_every == 0 or step == state.max_steps:
                self.evaluate(state, model)

    args = GRPOConfig(
        output_dir=str(out),
        max_steps=config.steps,
        per_device_train_batch_size=config.group_size * config.prompts_per_step,
        num_generations=config.group_size,
        max_completion_length=config.max_new_tokens,
        learning_rate=config.learning_rate,
        temperature=config.temperature,
        top_p=config.top_p,
        epsilon_high=config.epsilon_high,
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
    common = dict(
        model=model, reward_funcs=correct, args=args, train_dataset=data,
        processing_class=tokenizer,
        callbacks=[MetricsLog()] + ([TestAccuracy()] if config.eval_every else []),
    )  # fmt: skip
    if config.implementation == "trl":
        trainer = GRPOTrainer(**common)
    else:
        trainer = ForkingTokenGRPOTrainer(
            **common, token_mask=config.token_mask(), seed=config.seed,
            normalize=config.normalize,
        )  # fmt: skip
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last is not None:
        trim_metrics(metrics_path, int(Path(last).name.split("-")[-1]))
    else:
        metrics_path.unlink(missing_ok=True)
    trainer.train(resume_from_checkpoint=last)
    final = out / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(final)
    return final


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

    task = get_task(task_name)
    items = [task.problem("test", i) for i in range(problems)]
    pairs = complete(
        model, tokenizer, items, max_new_tokens, temperature=temperature, top_p=top_p,
        seed=seed, batch_size=batch_size, progress=progress,
    )  # fmt: skip
    texts = [tokenizer.decode(c, skip_special_tokens=True) for _, c in pairs]
    correct = [task.reward(t, p) for t, p in zip(texts, items, strict=True)]
    return sum(correct) / max(len(items), 1), texts
