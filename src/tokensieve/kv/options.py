"""KV policies from a user's options: the budget as typed, and each policy's extras.

Light (no torch), so the command lines can check options before anything loads.
"""

from __future__ import annotations

from tokensieve.errors import UserError

MAX_TURNS = 24  # turns of a multi-turn conversation: 12 distinct facts, one per two turns


def parse_budget(text: str) -> float | int:
    """'0.2' is a fraction of the prompt, '512' a token count."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(
            f"`budget` must be a fraction like 0.2 or a token count, got {text!r}"
        ) from None
    if value.is_integer() and value > 1:
        return int(value)
    if not 0.0 < value <= 1.0:
        raise UserError(f"`budget` must be in (0, 1] as a fraction or > 1 tokens, got {text}")
    return value


# options a policy would silently ignore: refused, with what the policy does instead
NOT_READ = {
    "streaming": {"recent": "its window is the budget after the sinks"},
    "snapkv": {"recent": "its observation window sets the recent tokens"},
    "tidaldecode": {"sink": "it selects per step and keeps every key",
                    "recent": "it selects per step and keeps every key"},
}  # fmt: skip


def make_kv_policy(
    name,
    budget,
    *,
    seed=0,
    max_new_tokens=None,
    sink=None,
    recent=None,
    reuse_threshold=None,
    prefill=None,
):
    """A KV policy from CLI options: `full` takes none; only keyformer and random are
    seeded; keyformer's temperature schedule and SirLLM's reserve need the number of new
    tokens; the selection cache and the sparse prefill are TokenSelect's."""
    from tokensieve.kv import make_policy

    asked = {"reuse-threshold": reuse_threshold, "prefill": None if prefill == "full" else prefill}
    for option, value in asked.items():
        if value is not None and name != "tokenselect":
            raise UserError(f"--{option} is TokenSelect's; the {name} policy has none")
    if reuse_threshold is not None and not 0.0 <= reuse_threshold <= 1.0:
        raise UserError(f"--reuse-threshold must be in [0, 1], got {reuse_threshold}")
    if name == "full":
        return make_policy(name)
    for option, value in (("sink", sink), ("recent", recent)):
        if value is not None and option in NOT_READ.get(name, {}):
            raise UserError(f"--{option} does not apply to the {name} policy: "
                            f"{NOT_READ[name][option]}")  # fmt: skip
    options = {"budget": budget}
    if sink is not None:
        options["sink"] = sink
    if recent is not None:
        options["recent"] = recent
    if name in ("keyformer", "random"):
        options["seed"] = seed
    if name == "keyformer" and max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    if name == "sirllm" and max_new_tokens is not None:
        options["reserve"] = max_new_tokens  # room for the answer, made before the input
    if name == "tokenselect":
        options["reuse_threshold"] = reuse_threshold
        options["prefill"] = prefill or "full"
    return make_policy(name, **options)
