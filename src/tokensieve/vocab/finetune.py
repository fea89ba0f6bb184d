"""Embeddings-only fine-tune: how fast a transplanted vocabulary recovers.

Only the vocabulary-facing matrices learn (the input embeddings and the output head, one
matrix when they are tied); the network is frozen, so what it knows stays and only the
new rows are fitted to it. This is the cheap healing step that transplantation papers
follow their initialisation with, and the fairest way to compare initialisations: a
better start should need fewer steps to reach the same loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError
from tokensieve.vocab.bits_per_byte import start_token


@dataclass
class FinetuneLog:
    """Training loss per step, and ``(step, value)`` from the optional evaluation."""

    losses: list[float] = field(default_factory=list)
    evaluations: list[tuple[int, float]] = field(default_factory=list)


def vocabulary_parameters(model) -> list[torch.nn.Parameter]:
    """The input embeddings and the output head, once each (tied heads share a matrix)."""
    head = model.get_output_embeddings()
    if head is None:
        raise UserError(f"{type(model).__name__} has no language-model head to fine-tune")
    found = {}
    for parameter in (model.get_input_embeddings().weight, head.weight):
        found.setdefault(id(parameter), parameter)
    return list(found.values())


def training_windows(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    """``[n, length]`` token windows cut from the texts, each document after the separator
    `bits_per_byte` scores it with."""
    first = start_token(tokenizer)
    ids: list[int] = []
    for text in texts:
        ids += [first, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    count = len(ids) // length
    if count == 0:
        raise UserError(f"the training text holds {len(ids)} tokens, fewer than one window "
                        f"of {length}")  # fmt: skip
    return torch.tensor(ids[: count * length]).view(count, length)


def check_options(steps: int, batch_size: int, length: int, lr: float, eval_every: int) -> None:
    """The fine-tune's options, checked before anything slow."""
    if steps < 0 or batch_size < 1 or length < 2 or eval_every < 0:
        raise UserError("need steps >= 0, batch size >= 1, window length >= 2, eval every >= 0")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"the learning rate must be a positive number, got {lr}")


@contextmanager
def _only_these_train(model, trained: list[torch.nn.Parameter]) -> Iterator[None]:
    """Inside, only `trained` gets gradients and the model is in training mode; after,
    every flag and the mode are as they were."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    try:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in trained:
            parameter.requires_grad_(True)
        model.train()
        yield
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])
        model.train(was_training)


def finetune_embeddings(
    model,
    tokenizer,
    texts: list[str],
    *,
    steps: int = 50,
    batch_size: int = 4,
    length: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    evaluate: Callable[[object], float] | None = None,
    eval_every: int = 0,
    progress: bool = True,
) -> FinetuneLog:
    """Train `model`'s vocabulary rows in place on next-token loss over `texts`.

    Batches are `batch_size` windows of `length` tokens drawn with a seeded generator;
    AdamW without weight decay (decay would pull rows the text never shows towards 0).
    `evaluate(model)` runs before the first step, every `eval_every` steps and after the
    last. Every other parameter keeps its values and its ``requires_grad`` flag.
    """
    check_options(steps, batch_size, length, lr, eval_every)
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and length > context:
        raise UserError(f"a window of {length} tokens is longer than the model's context "
                        f"({context})")  # fmt: skip
    windows = training_windows(tokenizer, texts, length)
    trained = vocabulary_parameters(model)
    log = FinetuneLog()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)

    def run_evaluation(step: int) -> None:
        if evaluate is not None:
            model.eval()
            log.evaluations.append((step, float(evaluate(model))))
            model.train()

    with _only_these_train(model, trained):
        run_evaluation(0)
        bar = tqdm(range(1, steps + 1), desc="embedding fine-tune", disable=not progress)
        for step in bar:
            rows = torch.randint(len(windows), (batch_size,), generator=generator)
            batch = windows[rows].to(trained[0].device)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            log.losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{log.losses[-1]:.3f}")
            if step == steps or (eval_every and step % eval_every == 0):
                run_evaluation(step)
    return log
