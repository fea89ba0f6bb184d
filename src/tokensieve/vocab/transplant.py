"""Write a model whose input embeddings and output head match a new tokenizer."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import torch

from tokensieve.errors import UserError
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
    **options,
):
    """A copy of `model` speaking `new_tokenizer`; saved to `out` when given.

    `method` is ``tokenadapt``, ``mean``, ``random`` or ``omp``; `options` go to its
    initialiser (e.g. ``space``, ``temperature``, ``k``, ``donor_rows``). Tied
    embeddings stay tied; an untied output head gets its rows from the same plan (the
    same mixing weights) applied to the old head. `out` must not exist (unless `force`) and is
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
        check_output(Path(out), model, force)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        plan = initializer.plan(old_tokenizer, new_tokenizer, embeddings)
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
        save_model(new, new_tokenizer, Path(out))
    return new


def check_output(out: Path, model, force: bool) -> None:
    """Refuse an existing `out` (unless `force`) and, always, the input model's own directory."""
    # load_model shortens name_or_path for display; the config keeps the real directory.
    sources = {getattr(model, "name_or_path", ""), getattr(model.config, "_name_or_path", "")}
    for source in filter(None, sources):
        if Path(source).exists() and out.resolve() == Path(source).resolve():
            raise UserError(f"refusing to write over the input model {source}")
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose a new --out or pass --force")


def save_model(model, tokenizer, out: Path) -> None:
    """Save into a temporary sibling, then rename: an interruption leaves no half model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if out.exists():  # --force: swap, then remove the old one
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "model")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
