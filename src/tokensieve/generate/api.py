"""One call for users: prompt + constraint + sampler name → weighted completions."""

from __future__ import annotations

from tokensieve.errors import UserError
from tokensieve.extensions import LANGUAGE_MODEL_VIEWS
from tokensieve.generate import SAMPLERS
from tokensieve.generate.constraints import Constraint
from tokensieve.generate.language_model import TokenLM
from tokensieve.generate.smc import GenerationResult, run_smc
from tokensieve.generate.token_samplers import AWRSSampler
from tokensieve.lm import chat_prompt_ids

METHODS = ("masking", "awrs", "smc")


def prompt_ids(tokenizer, prompt: str, chat: bool = True) -> list[int]:
    """The chat template's ids for a one-turn prompt, or the raw text's ids."""
    if chat and getattr(tokenizer, "chat_template", None):
        return chat_prompt_ids(tokenizer, prompt)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    if not ids:
        raise UserError("the prompt is empty")
    return ids


def generate(
    model,
    tokenizer,
    prompt: str,
    constraint: Constraint,
    *,
    method: str = "awrs",
    particles: int | None = None,
    max_tokens: int = 32,
    ess_threshold: float = 0.5,
    seed: int = 0,
    chat: bool = True,
    progress: bool = False,
    estimator: str = "recursive",
    view=None,
) -> GenerationResult:
    """Sample completions of `prompt` that satisfy `constraint`.

    `max_tokens` counts the answer's tokens; the end-of-turn token that closes it is
    not counted (SMC gets one step more, in which only an ending may be drawn).
    `estimator`: AWRS's weight estimator (``recursive``, ``paper``, ``geometric``; see
    `tokensieve.generate.token_samplers`).
    `method`: ``masking`` (check every token; exact locally constrained decoding),
    ``awrs`` (adaptive weighted rejection sampling; same local distribution, few
    checks), ``smc`` (AWRS proposals with resampling, default 5 particles; corrects
    towards the global conditional). For masking/awrs, ``particles > 1`` runs
    independent weighted particles.
    `view`: draw from another view of the model than its tokens: a name registered in
    `tokensieve.extensions.LANGUAGE_MODEL_VIEWS` (``"bytes"``, registered by the bytes
    capability) or a class built as ``view(model, tokenizer, prompt_ids)``
    (`tokensieve.bytes.sampler_view.ByteSamplerView`); `max_tokens` then counts its
    symbols (bytes).
    """
    if method not in METHODS:
        raise UserError(f"unknown sampler {method!r}; choose one of {', '.join(METHODS)}")
    if estimator not in AWRSSampler.ESTIMATORS:  # checked for masking too: never ignored
        raise UserError(f"unknown AWRS estimator {estimator!r}; choose one of "
                        f"{', '.join(AWRSSampler.ESTIMATORS)}")  # fmt: skip
    if particles is None:
        particles = 5 if method == "smc" else 1
    if particles < 1:
        raise UserError(f"`particles` must be at least 1, got {particles}")
    if max_tokens < 1:
        raise UserError(f"`max_tokens` must be at least 1, got {max_tokens}")
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty")
    ids = prompt_ids(tokenizer, prompt, chat)
    if view is None:
        lm = TokenLM(model, tokenizer, ids)
    else:
        build = LANGUAGE_MODEL_VIEWS.load(view) if isinstance(view, str) else view
        lm = build(model, tokenizer, ids)
    if method == "masking":
        sampler = SAMPLERS.build("masking")
    else:
        sampler = SAMPLERS.build("awrs", estimator=estimator)
    result = run_smc(
        lm,
        constraint,
        sampler,
        particles=particles,
        max_tokens=max_tokens + 1,
        ess_threshold=ess_threshold,
        resample=method == "smc",
        seed=seed,
        progress=progress,
        token_masks=view is None,  # llguidance's masks are over the model's own tokens
    )
    result.sampler = method
    return result
