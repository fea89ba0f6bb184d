"""Batched chat completions of task prompts: for test accuracy and the forking analysis."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from tokensieve.errors import UserError
from tokensieve.lm import chat_prompt_ids, end_of_turn_ids
from tokensieve.rl.tasks import Problem


def require_chat_template(tokenizer) -> None:
    if not tokenizer.chat_template:
        raise UserError("the model's tokenizer has no chat template; RL prompts are chat turns")


def complete(
    model,
    tokenizer,
    problems: list[Problem],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, completion ids)`` per problem: sampled at `temperature`/`top_p`,
    greedy at 0; completions end at the end-of-turn token (kept) or the token budget.

    Uses a private RNG stream, so calling it during training leaves training's own
    sampling unchanged.
    """
    require_chat_template(tokenizer)
    stops = end_of_turn_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        if temperature > 0
        else {"do_sample": False}
    )
    prompts = [chat_prompt_ids(tokenizer, p.prompt) for p in problems]
    results = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="sample"):
            batch = prompts[start : start + batch_size]
            width = max(len(p) for p in batch)  # left padding: every prompt ends at `width`
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            output = model.generate(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad, **sampling,
            )  # fmt: skip
            for prompt, row in zip(batch, output[:, width:].tolist(), strict=True):
                ends = [i for i, t in enumerate(row) if t in stops]
                results.append((prompt, row[: ends[0] + 1] if ends else row))
    return results
