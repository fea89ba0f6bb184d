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
from tokensieve.rl.tasks import get_task
from tokensieve.rl.token_masks import MASKS

TRAINER_MASKS = ("all", "top-entropy", "bottom-entropy", "random")


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
    temperature: float = 1.0
    epsilon_high: float = 0.28  # clip-higher (DAPO); = 0.2 for symmetric clipping
    save_every: int = 10

    def validate(self) -> None:
        get_task(self.task)
        if self.mask not in TRAINER_MASKS:
            extra = " (clip-cov and kl-cov change the loss: library only)"
            raise UserError(
                f"unknown mask {self.mask!r}; choose {', '.join(TRAINER_MASKS)}"
                + (extra if self.mask in MASKS else "")
            )
        if not 0.0 < self.rho <= 1.0:
            raise UserError(f"rho must be in (0, 1], got {self.rho}")
        for name in ("steps", "group_size", "prompts_per_step", "max_new_tokens", "save_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1")
        if self.group_size < 2:
            raise UserError("group-size must be at least 2 (GRPO compares completions)")

    def token_mask(self):
        cls = MASKS[self.mask]
        return cls() if self.mask == "all" else cls(rho=self.rho)


def require_chat_template(tokenizer) -> None:
    if not tokenizer.chat_template:
        raise UserError("the model's tokenizer has no chat template; RL prompts are chat turns")


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
    from trl import GRPOConfig

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

    class MetricsLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                with metrics_path.open("a") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    args = GRPOConfig(
        output_dir=str(out),
        max_steps=config.steps,
        per_device_train_batch_size=config.group_size * config.prompts_per_step,
        num_generations=config.group_size,
        max_completion_length=config.max_new_tokens,
        learning_rate=config.learning_rate,
        temperature=config.temperature,
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
    trainer = ForkingTokenGRPOTrainer(
        model=model,
        reward_funcs=correct,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        token_mask=config.token_mask(),
        seed=config.seed,
        callbacks=[MetricsLog()],
    )
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
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[float, list[str]]:
    """Share of the first `problems` test problems answered correctly (sampling at
    `temperature`, greedy at 0), and the completions."""
    import torch
    from tqdm.auto import tqdm

    task = get_task(task_name)
    require_chat_template(tokenizer)
    items = [task.problem("test", i) for i in range(problems)]
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    completions = []
    for start in tqdm(range(0, len(items), batch_size), disable=not progress, desc="eval"):
        batch = items[start : start + batch_size]
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], tokenize=False,
                                          add_generation_prompt=True)
            for p in batch
        ]  # fmt: skip
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False}
        )
        with torch.no_grad():
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )  # fmt: skip
        new = output[:, encoded["input_ids"].shape[1] :]
        completions += tokenizer.batch_decode(new, skip_special_tokens=True)
    correct = [task.reward(c, p) for c, p in zip(completions, items, strict=True)]
    return sum(correct) / max(len(items), 1), completions
