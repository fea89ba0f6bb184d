"""Write a model whose input embeddings and output head match a new tokenizer."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from tokensieve.errors import UserError
from tokensieve.outputs import check_output, pause_point, staged_directory
from tokensieve.vocab.initializers import make_initializer


def transplant(
    model,
    old_tokenizer,
    new_tokenizer,
    method: str = "mean",
    *,
    out: str | os.PathLike | None = None,
    force: bool = False,
    seed: int = 0,
    shared: dict[int, int] | None = None,
    **options,
):
    """A copy of `model` speaking `new_tokenizer`; saved to `out` when given.

    `method` is ``tokenadapt``, ``mean``, ``random`` or ``omp``; `shared` (new id → old
    id) replaces the shared tokens found by bytes (`tokensieve.vocab.initializers.
    shared_tokens`), e.g. to use another tool's matching; `options` go to its
    initialiser (e.g. ``space``, ``temperature``, ``k``, ``donor_rows``). Tied
    embeddings stay tied; an untied output head gets its rows from the same plan (the
    same mixing weights) applied to the old head. `out` must not exist (unless `force`),
    may not be, hold or lie inside the model's or the tokenizers' directories, and is
    written to a temporary sibling first, so an interrupted write leaves no half model.
    """
    initializer = make_initializer(method, seed=seed, **options)
    head = model.get_output_embeddings()
    if head is None:
        raise UserError(f"{type(model).__name__} has no language-model head to transplant")
    rows_held = model.get_input_embeddings().weight.shape[0]
    if len(old_tokenizer) > rows_held:
        raise UserError(
            f"the model's tokenizer has {len(old_tokenizer)} tokens but its embeddings only "
            f"{rows_held} rows: the tokenizer does not belong to this model"
        )
    if out is not None:
        out = check_model_output(out, [model, old_tokenizer, new_tokenizer], force)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        plan = initializer.plan(old_tokenizer, new_tokenizer, embeddings, shared)
        rows = plan.apply(embeddings)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        head_rows = None if tied else plan.apply(head.weight)
        new = copy.deepcopy(model)
        new.resize_token_embeddings(rows.shape[0])
        new.get_input_embeddings().weight.copy_(rows)
        if tied:
            new.tie_weights()
        else:
            new.get_output_embeddings().weight.copy_(head_rows)
    for role in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(new.config, role, getattr(new_tokenizer, role))
        if getattr(new, "generation_config", None) is not None:
            setattr(new.generation_config, role, getattr(new_tokenizer, role))
    if out is not None:
        save_model(new, new_tokenizer, out, replace=force)
    return new


def sources(*things) -> list[str]:
    """The directories models and tokenizers were loaded from (the inputs to protect).

    `load_model` shortens ``name_or_path`` for display; the config keeps the real one. A
    tokenizer read from a ``.gguf`` file names the file's folder: that folder counts only
    when it holds model or tokenizer files (the file itself is the caller's to protect)."""
    found = []
    for thing in things:
        config = getattr(thing, "config", None)
        for name in (getattr(thing, "name_or_path", ""), getattr(config, "_name_or_path", "")):
            path = Path(name) if name else None
            if path is not None and path.is_dir() and _holds_model_files(path):
                found.append(name)
    return found


def _holds_model_files(directory: Path) -> bool:
    names = ("config.json", "tokenizer.json", "tokenizer_config.json")
    return any((directory / name).is_file() for name in names)


def check_model_output(out, inputs, force: bool, extra=()) -> Path:
    """`out` for a model directory: never an input's, existing only with `force`."""
    from tokensieve.models import cache_root

    protected = [*sources(*inputs), *extra, cache_root()]
    return check_output(out, protected, existing="replace" if force else "refuse")


def save_model(model, tokenizer, out: Path, *, replace: bool = False) -> None:
    """Save into a temporary sibling, then rename: an interruption leaves no half model,
    and a replaced directory stays intact until the new one is complete."""
    with staged_directory(out, replace=replace) as staging:
        model.save_pretrained(staging)
        pause_point("model-saved")
        tokenizer.save_pretrained(staging)
