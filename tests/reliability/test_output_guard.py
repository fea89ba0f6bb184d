"""Nothing a user gave is deleted or changed, whatever --out and --force say (issue cases
1, 3 and 6: --out on an input, its parent, the tokenizer, a text file, '.', '', a path
under a file, an unwritable place)."""

from __future__ import annotations

import shutil

import pytest

from tests.reliability.conftest import one_line_error, snapshot

TEXT = "The with statement wraps a block with methods of a context manager.\n" * 40


@pytest.fixture
def inputs(tiny_dir, tmp_path):
    """A model directory with a neighbouring file, a tokenizer directory and a text file."""
    models = tmp_path / "models"
    shutil.copytree(tiny_dir, models / "tiny")
    (models / "notes.txt").write_text("my notes")
    shutil.copytree(tiny_dir, tmp_path / "tokenizer")
    (tmp_path / "corpus.txt").write_text(TEXT)
    return models / "tiny", tmp_path / "tokenizer", tmp_path / "corpus.txt"


def test_force_never_deletes_or_changes_an_input(cli, inputs, tmp_path):
    model, tokenizer, corpus = inputs
    transplant = ["vocab", "transplant", "--model", model, "--tokenizer", tokenizer,
                  "--method", "mean", "--force"]  # fmt: skip
    finetune = ["vocab", "finetune", "--model", model, "--file", corpus, "--length", "32",
                "--steps", "1", "--quiet", "--force"]  # fmt: skip
    cases = [
        ([*transplant, "--out", model.parent], "holds the input"),  # the model's parent
        ([*transplant, "--out", model], "is the input"),
        ([*transplant, "--out", tokenizer], "is the input"),
        ([*transplant, "--out", model / "inside"], "lies inside the input"),
        ([*transplant, "--out", tmp_path], "holds the input"),
        ([*finetune, "--out", corpus], "is the input"),
        ([*finetune, "--out", model.parent], "holds the input"),
        ([*finetune, "--out", model], "is the input"),
    ]
    before = snapshot(tmp_path)
    for argv, message in cases:
        code, _, err = cli(*argv)
        assert one_line_error(code, err, message), (argv, err)
    assert snapshot(tmp_path) == before  # byte for byte, nothing added or removed


def test_output_in_the_model_cache_is_refused(cli, inputs, tmp_path, monkeypatch):
    model, tokenizer, _ = inputs
    monkeypatch.setenv("TOKENSIEVE_CACHE", str(tmp_path / "cache"))
    code, _, err = cli("vocab", "transplant", "--model", model, "--tokenizer", tokenizer,
                       "--out", tmp_path / "cache" / "models" / "mine")  # fmt: skip
    assert one_line_error(code, err, "lies inside the input")


def test_current_and_empty_directories_are_refused(cli, inputs, tmp_path, monkeypatch):
    model, tokenizer, corpus = inputs
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    cases = [
        ["vocab", "transplant", "--model", model, "--tokenizer", tokenizer, "--out", ".",
         "--force"],
        ["vocab", "transplant", "--model", model, "--tokenizer", tokenizer, "--out", "..",
         "--force"],
        ["inspect", "--text", "abc", "--model", model, "--out", "."],
        ["rl", "train", "--task", "arithmetic", "--model", model, "--out", "."],
        ["kv", "eval", "--model", model, "--out", ".", "--context", "8", "--decode", "2"],
    ]  # fmt: skip
    for argv in cases:
        code, _, err = cli(*argv)
        assert one_line_error(code, err, "current directory"), (argv, err)
    for argv in (["inspect", "--text", "abc", "--model", model, "--out", ""],
                 ["vocab", "train-tokenizer", "--corpus", corpus, "--vocab-size", "300",
                  "--out", ""]):  # fmt: skip
        code, _, err = cli(*argv)
        assert one_line_error(code, err, "the output path is empty"), (argv, err)
    assert (work / "thesis.tex").read_text() == "years of work"


def test_bad_output_places_fail_before_the_model_loads(cli, tmp_path, monkeypatch):
    """A missing model would be the error if the model were loaded first: the output's
    error shows it is checked before any slow work."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    missing = tmp_path / "no-model"
    for argv in (
        ["inspect", "--text", "abc", "--model", missing, "--out", blocker / "report"],
        ["vocab", "transplant", "--model", missing, "--tokenizer", missing,
         "--out", blocker / "m"],
        ["rl", "compare", missing, "--out", blocker / "c"],
    ):  # fmt: skip
        code, _, err = cli(*argv)
        assert one_line_error(code, err, "is a file, not a directory"), (argv, err)
    monkeypatch.setattr("tokensieve.outputs.os.access", lambda *a, **k: False)
    code, _, err = cli("inspect", "--text", "abc", "--model", missing,
                       "--out", tmp_path / "ro" / "report")  # fmt: skip
    assert one_line_error(code, err, "is not writable")


def test_an_existing_directory_needs_force_and_force_replaces_only_it(cli, inputs, tmp_path):
    model, tokenizer, _ = inputs
    target = tmp_path / "new-model"
    target.mkdir()
    (target / "old.txt").write_text("replace me")
    argv = ["vocab", "transplant", "--model", model, "--tokenizer", tokenizer,
            "--method", "mean", "--out", target]  # fmt: skip
    code, _, err = cli(*argv)
    assert one_line_error(code, err, "exists")
    assert (target / "old.txt").is_file()
    before = snapshot(model.parent)
    code, _, err = cli(*argv, "--force")
    assert code == 0, err
    assert not (target / "old.txt").exists() and (target / "config.json").is_file()
    assert snapshot(model.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_written_models_follow_the_umask(cli, inputs, tmp_path):
    """Transplant outputs were readable by their owner only (mkdtemp's 0700, safetensors'
    0600); now the user's umask decides, as for any file they write."""
    import os

    model, tokenizer, _ = inputs
    previous = os.umask(0o022)
    try:
        code, _, err = cli("vocab", "transplant", "--model", model, "--tokenizer", tokenizer,
                           "--method", "mean", "--out", tmp_path / "shared")  # fmt: skip
    finally:
        os.umask(previous)
    assert code == 0, err
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o755
    for path in (tmp_path / "shared").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path
