"""Transplanting a tiny model: identity is exact, `mean` is the mean, output reloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokensieve import UserError
from tokensieve.lm import vocabulary_bytes
from tokensieve.models import tiny_model, tiny_tokenizer
from tokensieve.vocab import MeanInit, transplant
from tokensieve.vocab.initializers import split_with_old

TEXT = "Return a copy of the string with leading whitespace removed."


@pytest.mark.parametrize("method", ["mean", "random"])
@pytest.mark.parametrize("tied", [False, True])
def test_identical_tokenizer_reproduces_logits_exactly(method, tied):
    model, tokenizer = tiny_model(seed=3)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    new = transplant(model, tokenizer, tokenizer, method)
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, new(ids).logits)


def test_mean_of_a_new_token_is_the_mean_of_its_old_subtokens():
    model, old = tiny_model(seed=0)
    new_tokenizer = tiny_tokenizer(vocab_size=420)
    old_rows = model.get_input_embeddings().weight.detach()
    rows = MeanInit().plan(old, new_tokenizer, old_rows).apply(old_rows)
    old_bytes = vocabulary_bytes(old)
    lookup = {data: i for i, data in reversed(list(enumerate(old_bytes)))}
    checked = 0
    for index, data in enumerate(vocabulary_bytes(new_tokenizer)):
        if data in lookup or index in new_tokenizer.all_special_ids:
            continue
        pieces = split_with_old(data, old, lookup)
        assert len(pieces) >= 2 and b"".join(old_bytes[p] for p in pieces) == data
        try:  # text: the old tokenizer's own encoding; other bytes: one byte-token each
            expected_pieces = old(data.decode("utf-8"), add_special_tokens=False)["input_ids"]
        except UnicodeDecodeError:
            expected_pieces = [lookup[bytes([b])] for b in data]
        assert pieces == expected_pieces
        expected = model.get_input_embeddings().weight[pieces].mean(0)
        torch.testing.assert_close(rows[index], expected)
        checked += 1
    assert checked > 10


def test_output_directory_loads_and_generates(tmp_path):
    model, old = tiny_model(seed=0)
    new_tokenizer = tiny_tokenizer(vocab_size=420)
    out = tmp_path / "transplanted"
    transplant(model, old, new_tokenizer, "mean", out=out)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.get_input_embeddings().weight.shape[0] == len(new_tokenizer)
    ids = torch.tensor([new_tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    out_ids = loaded.generate(ids, max_new_tokens=4, do_sample=False)
    assert out_ids.shape[1] == ids.shape[1] + 4
    with pytest.raises(UserError, match="exists"):
        transplant(model, old, new_tokenizer, "mean", out=out)
    transplant(model, old, new_tokenizer, "random", out=out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transplanted"]  # no leftovers


def test_bad_method_and_missing_head():
    model, tokenizer = tiny_model()
    with pytest.raises(UserError, match="unknown method"):
        transplant(model, tokenizer, tokenizer, "magic")

    class Headless(torch.nn.Module):
        config = model.config

        def get_output_embeddings(self):
            return None

    with pytest.raises(UserError, match="no language-model head"):
        transplant(Headless(), tokenizer, tokenizer)


def test_an_interrupted_write_leaves_no_half_directory(tmp_path, monkeypatch):
    """Interrupted while saving: a new `out` never appears, a replaced one stays whole."""
    from transformers import PreTrainedTokenizerBase

    model, old = tiny_model(seed=0)
    new_tokenizer = tiny_tokenizer(vocab_size=420)
    kept = tmp_path / "kept"
    transplant(model, old, new_tokenizer, "mean", out=kept)
    before = {p.name: p.read_bytes() for p in kept.iterdir()}

    def interrupted(self, directory, *args, **kwargs):
        (Path(directory) / "tokenizer.json").write_text("{")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", interrupted)
    for out, force in [(tmp_path / "new", False), (kept, True)]:
        with pytest.raises(KeyboardInterrupt):
            transplant(model, old, new_tokenizer, "random", out=out, force=force)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before


def test_a_given_shared_set_replaces_the_byte_matching():
    """`shared` (new id → old id, e.g. another tool's matching): exactly those rows are
    copied, a token the bytes would match but `shared` leaves out is mixed instead, and
    a pair outside the vocabularies is refused."""
    from tokensieve.vocab.initializers import shared_tokens

    model, old = tiny_model(seed=0)
    new_tokenizer = tiny_tokenizer(vocab_size=420)
    by_bytes = shared_tokens(old, new_tokenizer)
    assert len(by_bytes) > 50
    dropped = sorted(by_bytes)[40]  # shared by bytes, left out here
    swapped = sorted(by_bytes)[41]  # paired with another old row here
    given = {i: j for i, j in by_bytes.items() if i != dropped}
    given[swapped] = by_bytes[sorted(by_bytes)[42]]
    old_rows = model.get_input_embeddings().weight.detach()
    plan = MeanInit().plan(old, new_tokenizer, old_rows, shared=given)
    assert plan.copies == given
    rows = plan.apply(old_rows)
    torch.testing.assert_close(rows[swapped], old_rows[given[swapped]])
    assert dropped not in plan.copies and dropped in plan.mixtures  # mixed from its pieces
    new = transplant(model, old, new_tokenizer, "mean", shared=given)
    torch.testing.assert_close(new.get_input_embeddings().weight[swapped], old_rows[given[swapped]])
    with pytest.raises(UserError, match="outside the vocabularies"):
        transplant(model, old, new_tokenizer, "mean", shared={10**6: 0})
