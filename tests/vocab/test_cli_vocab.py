"""`tokensieve vocab` end to end on a tiny model directory, and its answers to bad input."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, BertConfig, BertModel, T5Config, T5Model

from tokensieve.models import tiny_tokenizer

TEXT = "Return a copy of the string with leading whitespace removed. " * 20


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def test_train_transplant_and_evaluate(cli, tiny_dir, tmp_path, corpus):
    code, out, _ = cli("vocab", "train-tokenizer", "--corpus", corpus, "--vocab-size",
                       "320", "--supertokens", "--base-model", tiny_dir, "--out",
                       tmp_path / "tok")  # fmt: skip
    assert code == 0 and "bytes per token" in out
    before = sorted(p.name for p in tiny_dir.iterdir())
    code, out, _ = cli("vocab", "transplant", "--model", tiny_dir, "--tokenizer",
                       tmp_path / "tok", "--method", "tokenadapt", "--aux", "embeddings",
                       "--out", tmp_path / "new")  # fmt: skip
    assert code == 0, out
    assert sorted(p.name for p in tiny_dir.iterdir()) == before  # input untouched
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "new")
    assert loaded.get_input_embeddings().weight.shape[0] == 320
    code, out, _ = cli("vocab", "eval", "--model", tiny_dir, tmp_path / "new", "--file",
                       corpus, "--quiet")  # fmt: skip
    assert code == 0 and out.count("bits/byte") == 2


def test_bad_input(cli, tiny_dir, tmp_path, corpus):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    taken = tmp_path / "taken"  # a directory that holds something (an empty one is used)
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    encoder = tmp_path / "encoder"  # no causal LM head for T5
    T5Model(T5Config(vocab_size=320, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                     num_heads=2)).save_pretrained(encoder)  # fmt: skip
    tiny_tokenizer().save_pretrained(encoder)
    small = tmp_path / "small"  # a tokenizer larger than the model's embeddings
    config = BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)  # fmt: skip
    BertModel(config).save_pretrained(small)
    tiny_tokenizer().save_pretrained(small)
    base = ["vocab", "transplant", "--model", tiny_dir]
    cases = [
        ([*base, "--tokenizer", tmp_path / "missing", "--out", tmp_path / "o"], "no tokenizer"),
        ([*base, "--tokenizer", bad_json, "--out", tmp_path / "o"], "could not read a tokenizer"),
        ([*base, "--tokenizer", tiny_dir, "--out", taken], "exists"),
        ([*base, "--tokenizer", tiny_dir, "--out", tiny_dir, "--force"], "is the input"),
        (
            [
                "vocab",
                "transplant",
                "--model",
                encoder,
                "--tokenizer",
                tiny_dir,
                "--out",
                tmp_path / "o",
            ],
            "causal language model",
        ),  # fmt: skip
        ([*base, "--out", tmp_path / "o"], "give --tokenizer"),
        (
            [
                "vocab",
                "transplant",
                "--model",
                small,
                "--tokenizer",
                tiny_dir,
                "--out",
                tmp_path / "o",
            ],
            "does not belong",
        ),  # fmt: skip
        (
            [
                "vocab",
                "train-tokenizer",
                "--corpus",
                tmp_path / "none.txt",
                "--vocab-size",
                "400",
                "--out",
                tmp_path / "t",
            ],
            "no such file",
        ),  # fmt: skip
        (
            [
                "vocab",
                "train-tokenizer",
                "--corpus",
                corpus,
                "--vocab-size",
                "10",
                "--out",
                tmp_path / "t",
            ],
            "at least 300",
        ),  # fmt: skip
        (["vocab", "train-tokenizer", "--corpus", corpus, "--vocab-size", str(10**20),
          "--out", tmp_path / "t"], "at most 2**24"),
        ([*base, "--tokenizer", tiny_dir, "--out", tmp_path / "o", "--top-k", "-1"],
         "--top-k must be at least 1"),
        ([*base, "--tokenizer", tiny_dir, "--out", tmp_path / "o", "--temperature", "nan"],
         "--temperature must be a number"),
        ([*base, "--tokenizer", tiny_dir, "--out", tmp_path / "o", "--weight", "5"],
         "--weight must be in [0, 1]"),
        ([*base, "--tokenizer", tiny_dir, "--out", tmp_path / "o", "--method", "omp",
          "--k", "0"], "--k must be at least 1"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = cli(*argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "o").exists()
    code, _, _ = cli(*base, "--tokenizer", tiny_dir, "--out", taken, "--method", "mean",
                     "--force")  # fmt: skip
    assert code == 0 and (taken / "config.json").is_file()
