"""Shared fixtures: a tiny random Llama (fast, exact) and, for marked tests, the embedded model."""

from __future__ import annotations

import pytest
import torch

from tokensieve.models import tiny_model


@pytest.fixture(scope="session")
def tiny():
    """``(model, tokenizer)``: 2-layer random Llama with GQA (4 query heads, 2 KV heads)."""
    torch.manual_seed(0)
    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tiny, tmp_path_factory):
    """The tiny model saved as a local Hugging Face directory (context 256 tokens)."""
    model, tokenizer = tiny
    directory = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dir_without_chat_template(tiny_dir, tmp_path_factory):
    """A copy of `tiny_dir` whose tokenizer has no chat template (a base model's)."""
    import json
    import shutil

    plain = tmp_path_factory.mktemp("tiny-model-plain") / "plain"
    shutil.copytree(tiny_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    return plain


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (converted once into the user cache)."""
    from tokensieve.models import load_model

    return load_model()


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit code, stdout, stderr)``: the CLI in-process (paths as str)."""
    from tokensieve.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
