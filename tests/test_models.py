"""Model loading: specs, tiny models, and (marked `embedded`) the GGUF → safetensors cache."""

from __future__ import annotations

import shutil

import pytest
import torch

from tokensieve import UserError, load_model, tiny_model
from tokensieve.lm import chat_prompt_ids, end_of_turn_ids
from tokensieve.models import (
    MANIFEST,
    _cache_is_valid,
    _gguf_cache_dir,
    cache_keyword,
    converted_gguf,
    embedded_model_file,
    passed_cache,
    resolve_model_dir,
    with_cache,
)


def test_tiny_model_is_deterministic_per_seed():
    a, tok = tiny_model(seed=1)
    b, _ = tiny_model(seed=1)
    c, _ = tiny_model(seed=2)
    ids = torch.tensor([tok("hello there", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
        assert not torch.equal(a(ids).logits, c(ids).logits)
    assert a.config.num_key_value_heads < a.config.num_attention_heads  # exercises GQA


def test_local_directory_loads_same_logits(tiny, tiny_dir):
    model, tokenizer = tiny
    loaded, loaded_tokenizer = load_model(tiny_dir)
    ids = torch.tensor([tokenizer("some text", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template


@pytest.mark.parametrize("spec", ["/definitely/not/here", "HuggingFaceTB/SmolLM2-135M"])
def test_unknown_model_is_a_user_error_not_a_download(spec):
    with pytest.raises(UserError, match="no model at"):
        resolve_model_dir(spec)


def test_non_gguf_file_is_refused(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(UserError, match="not a .gguf"):
        resolve_model_dir(path)


def test_tiny_tokenizer_chat_template_and_end_of_turn(tiny):
    _, tokenizer = tiny
    ids = chat_prompt_ids(tokenizer, "hi")
    text = tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_of_turn_ids(tokenizer)


@pytest.mark.embedded
def test_embedded_chat_template_and_end_of_turn(embedded):
    _, tokenizer = embedded
    ids = chat_prompt_ids(tokenizer, "What is 2+2?")
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert end_of_turn_ids(tokenizer)[0] == tokenizer.convert_tokens_to_ids("<|im_end|>") == 2


@pytest.mark.embedded
def test_embedded_cache_second_load_equals_first(embedded):
    model, tokenizer = embedded
    again, _ = load_model()
    ids = torch.tensor(
        [tokenizer("The with statement is used", add_special_tokens=False)["input_ids"]]
    )
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152


@pytest.mark.embedded
def test_embedded_cache_matches_gguf_and_rebuilds_when_corrupt(embedded, tmp_path, monkeypatch):
    """A truncated copy is detected and rebuilt; the rebuild's logits equal the GGUF load."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = embedded
    gguf = embedded_model_file()
    valid = _gguf_cache_dir(gguf)
    assert _cache_is_valid(valid)
    monkeypatch.setenv("TOKENSIEVE_CACHE", str(tmp_path))
    copy = _gguf_cache_dir(gguf)
    shutil.copytree(valid, copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert not _cache_is_valid(copy)
    assert converted_gguf(gguf) == copy
    assert _cache_is_valid(copy) and (copy / MANIFEST).is_file()
    rebuilt, _ = load_model()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = torch.tensor([tokenizer("Context managers", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(rebuilt(ids).logits, direct(ids).logits)
        assert torch.equal(rebuilt(ids).logits, model(ids).logits)
    (copy / MANIFEST).unlink()  # a build interrupted before its manifest is not trusted
    assert not _cache_is_valid(copy)


def test_broken_gguf_file_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENSIEVE_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(UserError, match="could not read the GGUF model"):
        load_model(broken)
    assert not any((tmp_path / "cache").glob("models/*/tokensieve-manifest.json"))


def test_cache_keyword_is_what_the_installed_transformers_reads():
    """`with_cache` must name the forward argument transformers actually reads (renamed
    in 5.24); a wrong name would go to **kwargs and silently run without the cache."""
    import inspect

    from transformers import LlamaForCausalLM

    assert cache_keyword() in inspect.signature(LlamaForCausalLM.forward).parameters
    assert with_cache("c") == {cache_keyword(): "c"}
    assert passed_cache({"cache": "a"}) == "a"
    assert passed_cache({"past_key_values": "b"}) == "b"
    assert passed_cache({}) is None
