"""Embeddings-only fine-tune: only vocabulary rows move, loss falls, runs repeat exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokensieve import UserError
from tokensieve.models import tiny_model
from tokensieve.vocab.bits_per_byte import bits_per_byte
from tokensieve.vocab.finetune import finetune_embeddings, training_windows

TEXT = "Return a copy of the string with leading whitespace removed. " * 12


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("tied", [False, True])
def test_only_the_vocabulary_rows_train_and_the_loss_falls(tied):
    model, tokenizer = tiny_model(seed=1, head_scale=1.0)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    before = snapshot(model)
    log = finetune_embeddings(model, tokenizer, [TEXT], steps=30, batch_size=2, length=32,
                              lr=3e-2, progress=False)  # fmt: skip
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    vocabulary = {"model.embed_tokens.weight"} | (set() if tied else {"lm_head.weight"})
    assert changed == vocabulary
    assert sum(log.losses[-5:]) < 0.8 * sum(log.losses[:5])
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert not model.training  # mode restored (tiny_model returns eval mode)


def test_same_seed_same_result_and_evaluations_on_schedule():
    results = []
    for _ in range(2):
        model, tokenizer = tiny_model(seed=2, head_scale=1.0)
        log = finetune_embeddings(
            model, tokenizer, [TEXT], steps=5, batch_size=2, length=32, lr=1e-2, seed=7,
            evaluate=lambda m, t=tokenizer: bits_per_byte(m, t, [TEXT[:200]]).bits_per_byte,
            eval_every=2, progress=False,
        )  # fmt: skip
        results.append((log, model.get_input_embeddings().weight.detach().clone()))
    (first, rows), (second, rows_again) = results
    assert first.losses == second.losses and torch.equal(rows, rows_again)
    assert [step for step, _ in first.evaluations] == [0, 2, 4, 5]
    assert first.evaluations[-1][1] < first.evaluations[0][1]


def test_windows_and_bad_input():
    model, tokenizer = tiny_model(seed=0)
    windows = training_windows(tokenizer, [TEXT, TEXT], 16)
    assert windows.shape[1] == 16 and windows[0, 0] == tokenizer.bos_token_id
    with pytest.raises(UserError, match="fewer than one window"):
        finetune_embeddings(model, tokenizer, ["short"], steps=1, length=64, progress=False)


def test_cli_writes_a_loadable_model_and_never_touches_the_input(cli, tiny_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    before = {p.name: p.read_bytes() for p in tiny_dir.iterdir()}
    out = tmp_path / "healed"
    code, stdout, err = cli("vocab", "finetune", "--model", tiny_dir, "--file", corpus,
                            "--held-out", corpus, "--steps", "3", "--length", "32",
                            "--eval-every", "2", "--out", out, "--quiet")  # fmt: skip
    assert code == 0, err
    assert stdout.count("bits/byte") == 3  # steps 0, 2, 3
    assert {p.name: p.read_bytes() for p in tiny_dir.iterdir()} == before
    loaded = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert not torch.equal(loaded.get_input_embeddings().weight,
                           original.get_input_embeddings().weight)  # fmt: skip
    assert torch.equal(loaded.model.layers[0].mlp.up_proj.weight,
                       original.model.layers[0].mlp.up_proj.weight)  # fmt: skip
    cases = [
        (["--out", out], "exists"),
        (["--out", tiny_dir, "--force"], "is the input"),
        (["--out", tmp_path / "o", "--steps", "-1"], "steps >= 0"),
        (["--out", tmp_path / "o", "--eval-every", "-1"], "eval every >= 0"),
        (["--out", tmp_path / "o", "--length", "1000"], "longer than the model's context"),
    ]
    for extra, message in cases:
        code, _, err = cli("vocab", "finetune", "--model", tiny_dir, "--file", corpus,
                           "--length", "32", "--quiet", *extra)  # fmt: skip
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    code, _, err = cli("vocab", "finetune", "--model", tiny_dir, "--file", empty, "--out",
                       tmp_path / "o")  # fmt: skip
    assert code == 2 and "no text" in err
    assert not (tmp_path / "o").exists()
