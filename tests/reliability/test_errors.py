"""Errors, not tracebacks, and messages that name the real option (issue cases 6 and 7)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from tests.reliability.conftest import one_line_error

TEXT = "The with statement wraps a block with methods of a context manager.\n" * 10


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def test_unreadable_inputs(cli, tiny_dir, tmp_path, monkeypatch):
    code, _, err = cli("inspect", "--file", tmp_path, "--model", tiny_dir)
    assert one_line_error(code, err, "it is a directory")
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    original = Path.read_bytes

    def refuse(self):  # the tests run as root, whom chmod 000 does not stop
        if self == secret:
            raise PermissionError(13, "Permission denied")
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    code, _, err = cli("inspect", "--file", secret, "--model", tiny_dir)
    assert one_line_error(code, err, "Permission denied")


def test_paths_behind_a_folder_that_may_not_be_searched(cli, tiny_dir, tmp_path, monkeypatch):
    """Stat calls fail with EACCES when a folder on the way may not be searched (Python
    3.11's pathlib raises it); a text file, a model path and a .gguf whose bytes cannot
    be read each end in one line."""
    hidden = tmp_path / "hidden"
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    original_stat, original_open = Path.stat, Path.open

    def stat(self, *args, **kwargs):
        if hidden in (self, *self.parents):
            raise PermissionError(13, "Permission denied")
        return original_stat(self, *args, **kwargs)

    def open_(self, *args, **kwargs):
        if self == gguf:
            raise PermissionError(13, "Permission denied")
        return original_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr(Path, "open", open_)
    code, _, err = cli("inspect", "--file", hidden / "notes.txt", "--model", tiny_dir)
    assert one_line_error(code, err, "Permission denied")
    code, _, err = cli("inspect", "--text", "abc", "--model", hidden / "model")
    assert one_line_error(code, err, "Permission denied")
    code, _, err = cli("inspect", "--text", "abc", "--model", gguf)
    assert one_line_error(code, err, "Permission denied")


def test_cut_model_files(cli, tiny_dir, tmp_path, monkeypatch):
    import shutil

    from tokensieve.models import embedded_model_file

    cut = tmp_path / "cut"
    shutil.copytree(tiny_dir, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    code, _, err = cli("inspect", "--text", "abc", "--model", cut, "--out", tmp_path / "r")
    assert one_line_error(code, err, "could not load a causal language model")
    try:
        gguf = embedded_model_file()
    except ValueError:
        pytest.skip("the embedded model is not installed")
    with gguf.open("rb") as f:
        (tmp_path / "cut.gguf").write_bytes(f.read(1000))
    monkeypatch.setenv("TOKENSIEVE_CACHE", str(tmp_path / "cache"))
    code, _, err = cli("inspect", "--text", "abc", "--model", tmp_path / "cut.gguf",
                       "--out", tmp_path / "r")  # fmt: skip
    assert one_line_error(code, err, "could not read the GGUF model")


def test_unwritable_model_cache_is_named_before_converting(cli, tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("a file where the cache would go")
    monkeypatch.setenv("TOKENSIEVE_CACHE", str(tmp_path / "blocker" / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    code, _, err = cli("inspect", "--text", "abc", "--model", gguf, "--out", tmp_path / "r")
    assert one_line_error(code, err, "cannot write the model cache")
    assert "TOKENSIEVE_CACHE" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "--text", "abc", "--temperature", "-1"], "temperature must be"),
        (["inspect", "--prompt", "abc", "--temperature", "nan"], "temperature must be"),
        (["rl", "eval", "--task", "arithmetic", "--max-new-tokens", "0"], "max-new-tokens"),
        (["rl", "eval", "--task", "arithmetic", "--top-p", "0"], "top-p"),
        (["rl", "eval", "--task", "arithmetic", "--temperature", "-1"], "temperature"),
        (["vocab", "finetune", "--file", "{corpus}", "--out", "{tmp}/o", "--lr", "-1"],
         "learning rate"),
        (["vocab", "finetune", "--file", "{corpus}", "--out", "{tmp}/o", "--lr", "nan"],
         "learning rate"),
        (["kv", "generate", "--policy", "h2o", "--budget", "2.5", "--prompt", "x"], "--budget"),
    ],
)  # fmt: skip
def test_bad_values_fail_before_the_model_loads(cli, tmp_path, corpus, argv, message):
    missing = str(tmp_path / "no-model")  # were the model loaded first, this would be the error
    argv = [a.format(corpus=corpus, tmp=tmp_path) for a in argv]
    code, _, err = cli(*argv, "--model", missing)
    assert one_line_error(code, err, message), err


def test_context_overflow_names_options_the_command_has(cli, tiny_dir, tmp_path):
    long_text = tmp_path / "long.txt"
    long_text.write_text(TEXT * 20)
    code, _, err = cli("kv", "generate", "--file", long_text, "--model", tiny_dir, "--quiet")
    assert one_line_error(code, err, "reads at most 256")
    assert "--max-tokens" not in err and "--max-new-tokens" in err
    code, _, err = cli("inspect", "--file", long_text, "--model", tiny_dir,
                       "--out", tmp_path / "r", "--quiet")  # fmt: skip
    assert one_line_error(code, err, "--max-tokens")


def test_predicate_module_in_the_current_directory(cli, tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "my_rules.py").write_text("def short(text):\n    return len(text) <= 3\n")
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli("generate", "--prompt", "Say hi", "--predicate", "my_rules:short",
                            "--model", tiny_dir, "--max-tokens", "3", "--quiet")  # fmt: skip
    assert code in (0, 1), err  # 1: no completion met it; either way the module was found
    assert "cannot import" not in err


def test_compressed_cache_outside_compression_warns(tiny):
    from tokensieve.kv import CompressedCache, H2OPolicy, compression
    from tokensieve.models import with_cache

    model, _ = tiny
    ids = torch.arange(3, 40).unsqueeze(0)
    cache = CompressedCache(model.config, H2OPolicy(budget=8))
    with pytest.warns(UserWarning, match="outside `compression"), torch.no_grad():
        model(ids, **with_cache(cache))
    cache = CompressedCache(model.config, H2OPolicy(budget=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad(), compression(model, cache):
            model(ids, **with_cache(cache))
    assert cache.layers[0].physical_length() == 8


def test_max_tokens_counts_answer_tokens_not_the_end_of_turn(tiny):
    from tokensieve.generate import RegexConstraint, generate

    model, tokenizer = tiny
    eos = set(tokenizer.convert_tokens_to_ids(["<|im_end|>"]))
    result = generate(model, tokenizer, "Hi", RegexConstraint(r"[a-z ]*"), method="masking",
                      particles=4, max_tokens=3, seed=0)  # fmt: skip
    assert result.completions
    lengths = [len([t for t in c.token_ids if t not in eos]) for c in result.completions]
    assert max(lengths) == 3 and all(n <= 3 for n in lengths)
