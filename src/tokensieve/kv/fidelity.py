"""How faithfully a compressed KV cache follows the full one on real text.

The text's first `context` tokens are read (prefill, where prompt compression
happens), then the following tokens are fed one by one, teacher-forced, as in
decoding, so decode-time eviction runs at every step. At each step the compressed
model's next-token distribution is compared with the full cache's:

- perplexity of the true next tokens under the compressed cache,
- KL(full ‖ compressed) of the next-token distributions (nats, mean over steps),
- top-1 agreement: how often both caches' most likely next token is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tokensieve.kv.cache import CompressedCache, compression
from tokensieve.kv.policies import FullPolicy
from tokensieve.kv.policy import KVPolicy
from tokensieve.lm import check_context
from tokensieve.models import with_cache


@torch.no_grad()
def teacher_forced_logits(
    model, ids: torch.Tensor, context: int, policy: KVPolicy | None = None, progress=False
) -> tuple[torch.Tensor, CompressedCache]:
    """Logits predicting ``ids[context:]`` after prefilling ``ids[:context]``.

    Args:
        ids: ``[n]`` token ids; ``0 < context < n``.
    Returns:
        ``([n - context, vocab] float32 logits, the cache afterwards)``.
    """
    if not 0 < context < len(ids):
        raise ValueError("context must leave at least one token to predict")
    check_context(model, len(ids))
    cache = CompressedCache(model.config, policy or FullPolicy())
    rows = []
    with compression(model, cache):
        out = model(input_ids=ids[None, :context], **with_cache(cache), use_cache=True)
        rows.append(out.logits[0, -1].float())
        for t in tqdm(
            range(context, len(ids) - 1),
            disable=not progress,
            desc=policy.name if policy else "full",
            leave=False,
        ):
            out = model(input_ids=ids[None, t : t + 1], **with_cache(cache), use_cache=True)
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows), cache


@dataclass
class FidelityResult:
    policy: str
    budget: float | int
    context: int
    decoded: int
    perplexity: float
    kl_to_full: float
    top1_agreement: float
    kv_bytes: int
    full_kv_bytes: int


def compare(
    reference: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
) -> tuple[float, float, float]:
    """(perplexity of `targets`, mean KL(reference ‖ logits), top-1 agreement)."""
    log_q = torch.log_softmax(logits.double(), -1)
    log_p = torch.log_softmax(reference.double(), -1)
    nll = -log_q.gather(1, targets[:, None])[:, 0]
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    agree = (reference.argmax(-1) == logits.argmax(-1)).double()
    return math.exp(float(nll.mean())), float(kl.mean()), float(agree.mean())


def kv_fidelity(
    model,
    ids: torch.Tensor,
    context: int,
    policies: list[KVPolicy],
    progress: bool = False,
) -> list[FidelityResult]:
    """Fidelity of each policy to the full cache on the same text (full listed first)."""
    reference, full_cache = teacher_forced_logits(model, ids, context, None, progress)
    targets = ids[context:]
    results = []
    for policy in [FullPolicy(), *policies]:
        if isinstance(policy, FullPolicy):
            logits, cache = reference, full_cache
        else:
            logits, cache = teacher_forced_logits(model, ids, context, policy, progress)
        ppl, kl, top1 = compare(reference, logits, targets)
        results.append(
            FidelityResult(
                policy=policy.name,
                budget=policy.budget,
                context=context,
                decoded=len(targets),
                perplexity=ppl,
                kl_to_full=kl,
                top1_agreement=top1,
                kv_bytes=cache.kv_bytes(),
                full_kv_bytes=full_cache.kv_bytes(),
            )
        )
    return results
