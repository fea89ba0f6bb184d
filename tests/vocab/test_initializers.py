"""TokenAdapt against a slow reference of its formulas; OMP recovers sparse mixtures."""

from __future__ import annotations

import math

import pytest
import torch

from tokensieve.models import tiny_model, tiny_tokenizer
from tokensieve.vocab import METHODS, OMPInit, TokenAdaptInit, transplant
from tokensieve.vocab.aux_space import EmbeddingSpace
from tokensieve.vocab.omp import omp

TEXT = "Return a copy of the string with leading whitespace removed."


@pytest.mark.parametrize("method", METHODS)
def test_every_method_reproduces_the_model_on_its_own_tokenizer(method):
    model, tokenizer = tiny_model(seed=5)
    new = transplant(model, tokenizer, tokenizer, method, space="embeddings")
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, new(ids).logits)


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def test_tokenadapt_weights_equal_a_slow_reference():
    model, old = tiny_model(seed=1)
    new_tokenizer = tiny_tokenizer(vocab_size=420)
    rows = model.get_input_embeddings().weight.detach().double()
    tau, top_k, lam = 0.3, 3, 0.3
    init = TokenAdaptInit(space=EmbeddingSpace(rows.float(), old), temperature=tau, top_k=top_k)
    plan = init.plan(old, new_tokenizer, rows.float())
    assert len(plan.mixtures) > 10

    def aux(text: str) -> list[float]:  # the fallback space, recomputed by hand
        ids = old(text, add_special_tokens=False)["input_ids"]
        vector = rows[ids].mean(0)
        return (vector / vector.norm()).tolist()

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    # a zero row (the padding token's) has no direction: similarity 0, like F.normalize
    old_aux = [(rows[i] / rows[i].norm().clamp_min(1e-12)).tolist() for i in range(len(old))]
    for index, (ids, weights) in plan.mixtures.items():
        text = new_tokenizer.decode([index])
        pieces = old(text, add_special_tokens=False)["input_ids"]
        a = aux(text)
        first = softmax([cos(a, old_aux[p]) for p in pieces])
        share = [len(old.decode([p])) / len(text) for p in pieces]
        local = softmax([((f + s) / 2) / (tau + 1e-5) for f, s in zip(first, share, strict=True)])
        sims = sorted(((cos(a, v), j) for j, v in enumerate(old_aux)), reverse=True)[:top_k]
        glob = softmax([s / (tau + 1e-5) for s, _ in sims])
        kept = [g if s >= 0 else 0.0 for g, (s, _) in zip(glob, sims, strict=True)]
        glob = [g / sum(kept) for g in kept]
        expected_ids = pieces + [j for _, j in sims]
        expected = [(1 - lam) * w for w in local] + [lam * w for w in glob]
        assert ids[: len(pieces)] == pieces
        assert sorted(ids[len(pieces) :]) == sorted(expected_ids[len(pieces) :])
        got = dict(zip(ids[len(pieces) :], weights[len(pieces) :], strict=True))
        for j, w in zip(expected_ids[len(pieces) :], expected[len(pieces) :], strict=True):
            assert got[j] == pytest.approx(w, abs=1e-5)
        assert weights[: len(pieces)] == pytest.approx(expected[: len(pieces)], abs=1e-5)


def test_omp_recovers_an_exact_sparse_combination():
    generator = torch.Generator().manual_seed(0)
    dictionary = torch.randn(40, 128, generator=generator, dtype=torch.float64)
    truth = torch.zeros(5, 40, dtype=torch.float64)
    for row, atoms in enumerate([[1, 7, 30], [2, 3, 4], [39, 0, 12], [5, 6, 21], [8, 9, 10]]):
        truth[row, atoms] = torch.tensor([1.5, -0.7, 0.4], dtype=torch.float64)
    chosen, coefficients = omp(dictionary, truth @ dictionary, k=3)
    recovered = torch.zeros_like(truth).scatter_(1, chosen, coefficients)
    torch.testing.assert_close(recovered, truth)


def test_omp_init_carries_donor_coefficients_to_old_rows():
    model, old = tiny_model(seed=2)
    new_tokenizer = tiny_tokenizer(vocab_size=420)
    rows = model.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(1)
    donor = torch.randn(len(new_tokenizer), 64, generator=generator)
    probe = OMPInit(k=2, donor_rows=donor).plan(old, new_tokenizer, rows)
    anchors = list(probe.copies)
    target = next(i for i in range(len(new_tokenizer)) if i not in probe.copies)
    donor[target] = 2.0 * donor[anchors[3]] - 0.5 * donor[anchors[10]]  # exactly 2 anchors
    plan = OMPInit(k=2, donor_rows=donor).plan(old, new_tokenizer, rows)
    expected = 2.0 * rows[probe.copies[anchors[3]]] - 0.5 * rows[probe.copies[anchors[10]]]
    torch.testing.assert_close(plan.apply(rows)[target], expected, rtol=1e-4, atol=1e-5)


def test_vocabulary_bytes_of_a_sentencepiece_style_tokenizer():
    from tokenizers import SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from tokensieve.lm import vocabulary_bytes

    trainer = SentencePieceBPETokenizer()
    trainer.train_from_iterator([TEXT] * 20, vocab_size=120, special_tokens=["<unk>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=trainer, unk_token="<unk>")
    table = vocabulary_bytes(tokenizer)
    assert table[tokenizer.unk_token_id] == b"<unk>"
    ids = tokenizer("copy the string", add_special_tokens=False)["input_ids"]
    assert b"".join(table[i] for i in ids).strip() == b"copy the string"
    assert any(piece.startswith(b" ") for piece in table)  # "\u2581" became a space


@pytest.mark.parametrize("method", METHODS)
def test_every_method_mixes_onto_a_tokenizer_that_differs(method):
    """Onto a different vocabulary every method's mixing runs: shared tokens are copied,
    each mixed row is the weighted sum of the old rows its plan names (recomputed here
    row by row, input and untied head alike), the rest are random rows of the old mean
    norm."""
    from tokensieve.lm import vocabulary_bytes
    from tokensieve.vocab import make_initializer

    model, old = tiny_model(seed=2)
    new_tokenizer = tiny_tokenizer(vocab_size=420)
    assert len(new_tokenizer) != len(old)
    embeddings = model.get_input_embeddings().weight.detach()
    head = model.get_output_embeddings().weight.detach()
    init = make_initializer(method, space="embeddings", k=4, seed=0)
    plan = init.plan(old, new_tokenizer, embeddings)
    new = transplant(model, old, new_tokenizer, method, space="embeddings", k=4, seed=0)
    new_rows = new.get_input_embeddings().weight.detach().double()
    new_head = new.get_output_embeddings().weight.detach().double()
    old_bytes, new_bytes = vocabulary_bytes(old), vocabulary_bytes(new_tokenizer)
    shared = {i for i, b in enumerate(new_bytes) if b in set(old_bytes)}
    assert set(plan.copies) <= shared and len(plan.copies) > 100
    for new_id, old_id in plan.copies.items():
        assert new_bytes[new_id] == old_bytes[old_id]
        assert torch.equal(new_rows[new_id], embeddings[old_id].double())
    if method == "random":
        assert not plan.mixtures
    else:
        assert len(plan.mixtures) >= 20, "the mixing never ran"
    for new_id, (ids, weights) in plan.mixtures.items():
        assert len(ids) == len(weights) and new_id not in plan.copies
        if method == "mean":  # the old split of the new token, equally weighted
            assert b"".join(old_bytes[i] for i in ids) == new_bytes[new_id]
            assert weights == pytest.approx([1 / len(ids)] * len(ids))
        for rows, source in ((new_rows, embeddings), (new_head, head)):
            expected = sum(w * source[i].double() for i, w in zip(ids, weights, strict=True))
            torch.testing.assert_close(rows[new_id], expected, rtol=1e-5, atol=1e-6)
    assert plan.draw == ("normal" if method == "tokenadapt" else "sphere")
    mean_norm = embeddings.norm(dim=1).mean().item()
    for new_id in plan.random_ids():
        if plan.draw == "sphere":
            assert new_rows[new_id].norm().item() == pytest.approx(mean_norm, rel=1e-4)


def test_rows_nothing_fills_are_drawn_as_each_reference_draws_them():
    """ "sphere": a random direction of the old rows' mean norm; "normal" (TokenAdapt's
    reference): every entry from N(mean, std) of the old matrix's entries."""
    from tokensieve.vocab.initializers import Plan

    generator = torch.Generator().manual_seed(5)
    old = torch.randn(300, 64, generator=generator) * 0.7 + 0.25  # a mean away from 0
    mean, std = old.mean().item(), old.std().item()
    normal = Plan(size=1000, draw="normal", seed=1).apply(old)
    n = normal.numel()
    assert abs(normal.mean().item() - mean) < 5 * std / math.sqrt(n)
    assert normal.std().item() == pytest.approx(std, rel=0.02)
    assert normal.norm(dim=1).std().item() > 0.01  # norms vary, unlike the sphere
    sphere = Plan(size=1000, draw="sphere", seed=1).apply(old)
    norms = sphere.norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, old.norm(dim=1).mean().item()))
    assert abs(sphere.mean().item()) < 5 * sphere.std().item() / math.sqrt(n)  # centred at 0
    again = Plan(size=1000, draw="normal", seed=1).apply(old)
    assert torch.equal(normal, again)  # seeded
