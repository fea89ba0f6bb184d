"""Streaming past the context window, and re-rotation of kept keys (pos-shift).

The references are written here from the papers' definitions. With one layer a token's
key and value depend on the token alone, so a cache that keeps the sinks and the recent
window, re-rotated to their ranks, must give exactly the logits of a fresh forward over
those kept tokens followed by the new chunk at positions 0, 1, 2, ... (StreamingLLM
§3.2); without re-rotation, the same forward with each token at its place in the text."""

from __future__ import annotations

import json

import pytest
import torch

from tokensieve.errors import UserError
from tokensieve.kv import CompressedCache, StreamingPolicy, compression, make_policy
from tokensieve.kv.rotation import rope_frequencies, rotate
from tokensieve.kv.stream import check_stream, stream_perplexity
from tokensieve.models import tiny_model, with_cache

BUDGET, SINK, CHUNK = 24, 3, 5


@pytest.fixture(scope="module")
def one_layer():
    model, tokenizer = tiny_model(layers=1, seed=4, head_scale=8.0)
    return model.double(), tokenizer


def _ids(tokenizer, count: int) -> torch.Tensor:
    import inspect
    import textwrap

    ids = tokenizer(inspect.getsource(textwrap), add_special_tokens=False)["input_ids"]
    assert len(ids) >= count
    return torch.tensor(ids[:count])


def _kept_before(read: int) -> list[int]:
    """Positions StreamingLLM keeps after reading `read` tokens: sinks + recent window."""
    if read <= BUDGET:
        return list(range(read))
    return list(range(SINK)) + list(range(read - (BUDGET - SINK), read))


@pytest.mark.parametrize("pos_shift", [True, False])
def test_each_chunk_sees_exactly_the_sinks_and_the_window(one_layer, pos_shift):
    model, tokenizer = one_layer
    ids = _ids(tokenizer, 17 * CHUNK)
    policy = StreamingPolicy(budget=BUDGET, sink=SINK)
    cache = CompressedCache(model.config, policy,
                            pos_shift=rope_frequencies(model) if pos_shift else None)  # fmt: skip
    with torch.no_grad(), compression(model, cache):
        for start in range(0, len(ids), CHUNK):
            piece = ids[start : start + CHUNK]
            got = model(input_ids=piece[None], **with_cache(cache), use_cache=True).logits[0]
            kept = _kept_before(start)
            sequence = torch.cat([ids[kept], piece])
            if pos_shift:  # ranks: 0 .. len - 1
                positions = torch.arange(len(sequence))
            else:  # where each token stands in the text
                positions = torch.tensor(kept + list(range(start, start + len(piece))))
            want = model(input_ids=sequence[None], position_ids=positions[None]).logits[0]
            assert torch.allclose(got, want[len(kept) :], atol=1e-10), start
            assert cache.layers[0].physical_length() == min(start + len(piece), BUDGET)
    assert cache.seen_tokens() == len(ids)
    assert cache.get_seq_length() == (BUDGET if pos_shift else len(ids))
    expected = _kept_before(len(ids))
    assert cache.kept_positions()[0][0, 0].tolist() == expected


def test_rotation_is_the_models_rope(one_layer):
    """rotate(k, p) equals transformers' own RoPE of k at position p, and rotating back
    by -p recovers k."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model, _ = one_layer
    frequencies = rope_frequencies(model)
    torch.manual_seed(0)
    heads, dim = model.config.num_key_value_heads, model.config.head_dim
    keys = torch.randn(1, heads, 7, dim, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 5, 40, 300, 1000, 9000]])
    cos, sin = model.model.rotary_emb(keys, positions)
    want, _ = apply_rotary_pos_emb(keys, keys, cos, sin)
    got = rotate(keys, positions[0], frequencies)
    assert torch.allclose(got, want, atol=1e-4)  # float32 angles at position 9000
    assert torch.allclose(rotate(got, -positions[0], frequencies), keys, atol=1e-4)


def test_a_stream_runs_past_the_context_window(one_layer):
    model, tokenizer = one_layer
    window = model.config.max_position_embeddings
    ids = _ids(tokenizer, 3 * window)
    shifted = stream_perplexity(model, ids, StreamingPolicy(budget=BUDGET, sink=SINK),
                                chunk=CHUNK, window=100)  # fmt: skip
    assert shifted.max_position < BUDGET + CHUNK
    assert len(shifted.window_perplexity) == (len(ids) - 1) // 100
    assert shifted.kept == BUDGET
    plain = stream_perplexity(model, ids, StreamingPolicy(budget=BUDGET, sink=SINK),
                              pos_shift=False, chunk=CHUNK, window=100)  # fmt: skip
    assert plain.max_position == len(ids) - 1 > window
    assert plain.perplexity != pytest.approx(shifted.perplexity, rel=1e-6)


def test_stream_perplexity_is_the_mean_of_the_true_next_token_losses(one_layer):
    """With a budget larger than the text, the stream is a plain forward."""
    model, tokenizer = one_layer
    ids = _ids(tokenizer, 60)
    result = stream_perplexity(model, ids, StreamingPolicy(budget=200, sink=SINK), chunk=7,
                               window=20)  # fmt: skip
    with torch.no_grad():
        logs = torch.log_softmax(model(input_ids=ids[None]).logits[0, :-1].double(), -1)
    nll = -logs.gather(1, ids[1:, None])[:, 0]
    assert result.perplexity == pytest.approx(torch.exp(nll.mean()).item(), rel=1e-6)  # float32
    windows = [torch.exp(nll[i : i + 20].mean()).item() for i in (0, 20)]
    assert result.window_perplexity == pytest.approx(windows, rel=1e-6)
    assert result.tokens_read == [21, 41]


def test_streams_need_an_evicting_policy_and_a_token_budget(one_layer):
    model, _ = one_layer
    with pytest.raises(UserError, match="does not evict as it reads"):
        check_stream(model, make_policy("snapkv", budget=64), True, 8, 64)
    with pytest.raises(UserError, match="token count"):
        check_stream(model, make_policy("streaming", budget=0.2), True, 8, 64)
    with pytest.raises(UserError, match="exceeds the model's window"):
        check_stream(model, make_policy("streaming", budget=250), False, 8, 64)
    check_stream(model, make_policy("streaming", budget=250), True, 8, 64)  # re-rotated: fine


def _gpt2_dir(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tokensieve.models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_the_cli_streams_a_file_and_writes_a_plot(cli, tiny_dir, tmp_path):
    import inspect
    import textwrap

    text = tmp_path / "long.txt"
    text.write_text(inspect.getsource(textwrap)[:6000])
    out = tmp_path / "run"
    code, stdout, err = cli("kv", "stream", "--model", tiny_dir, "--file", text, "--budget", "40",
                            "--chunk", "8", "--window", "64", "--json", "--out", out)  # fmt: skip
    assert code == 0, err
    figures = json.loads(stdout)
    assert figures["tokens"] > figures["context_window"] and figures["max_position"] < 48
    assert (out / "stream.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "stream.json").read_text())["perplexity"] == figures["perplexity"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--file", "EMPTY"], "is empty"),
        (["--file", "MISSING"], "no such file"),
        (["--file", "TEXT", "--no-pos-shift", "--budget", "300"], "exceeds the model's window"),
        (["--file", "TEXT", "--policy", "snapkv"], "does not evict as it reads"),
        (["--file", "TEXT", "--budget", "0.2"], "token count"),
        (["--file", "TEXT", "--chunk", "0"], "at least 1"),
        (["--file", "TEXT", "--model", "GPT2"], "needs RoPE positions"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny_dir, tmp_path, extra, message):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "text.txt").write_text("Some text to read. " * 20)
    paths = {"EMPTY": tmp_path / "empty.txt", "MISSING": tmp_path / "none.txt",
             "TEXT": tmp_path / "text.txt"}  # fmt: skip
    if "GPT2" in extra:
        paths["GPT2"] = _gpt2_dir(tmp_path / "gpt2")
    argv = [str(paths.get(a, a)) for a in extra]
    if "--model" not in argv:
        argv += ["--model", str(tiny_dir)]
    code, _, err = cli("kv", "stream", "--quiet", *argv)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="no CUDA device here"))],
)  # fmt: skip
def test_a_bfloat16_stream_follows_the_models_device(device):
    model, tokenizer = tiny_model(layers=2, seed=4)
    model = model.to(device=device, dtype=torch.bfloat16)
    ids = _ids(tokenizer, 200)
    policy = StreamingPolicy(budget=BUDGET, sink=SINK)
    result = stream_perplexity(model, ids, policy, chunk=CHUNK, window=50)
    reference = stream_perplexity(model.float(), ids, policy, chunk=CHUNK, window=50)
    assert result.kept == BUDGET and result.max_position < BUDGET + CHUNK
    assert result.perplexity == pytest.approx(reference.perplexity, rel=0.05)


@pytest.mark.parametrize("mode", ["aware", "agnostic"])
def test_the_rerotated_passkey_loop_answers_as_generate_when_nothing_is_evicted(tiny, mode):
    """With every token kept, ranks are text positions: the written-out greedy loop of the
    re-rotated passkey path must produce exactly `model.generate`'s tokens."""
    import inspect
    import textwrap

    from tokensieve.kv.passkey import _rerotated_answer, make_passkey_case

    model, tokenizer = tiny
    case = make_passkey_case(tokenizer, inspect.getsource(textwrap), 120, 0.5, seed=0)
    ids = torch.tensor([case.ids])
    with torch.no_grad():
        reference = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                   do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    expected = reference[0, len(case.ids) :].tolist()
    assert _rerotated_answer(model, case, None, 8, mode) == expected
    keep_all = StreamingPolicy(budget=len(case.ids) + 8, sink=SINK)
    assert _rerotated_answer(model, case, keep_all, 8, mode) == expected
