"""`tokensieve bytes …`: next bytes, completions from any byte prefix, ensembles, bad input."""

from __future__ import annotations

import json

import pytest


def test_next_lists_bytes_and_the_end(cli, tiny_dir):
    code, out, err = cli("bytes", "next", "--model", tiny_dir, "--prompt-bytes", "The wo",
                         "--json", "--top", "257")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)["next"]
    assert len(rows) == 257 and abs(sum(r["probability"] for r in rows) - 1) < 1e-6


@pytest.mark.parametrize("prompt", ["def fibonac", "", "caf\\xc3", "\\xff\\xfe"])
def test_complete_continues_any_byte_prefix(cli, tiny_dir, prompt):
    code, out, err = cli("bytes", "complete", "--model", tiny_dir, "--prompt-bytes", prompt,
                         "--max-bytes", "6", "--json")  # fmt: skip
    assert code == 0, err
    assert "completion" in json.loads(out)


def test_a_vanishing_temperature_samples_the_greedy_bytes(cli, tiny_dir):
    """τ → 0 is greedy; a τ so small that every log-probability / τ overflows still
    samples (the best byte is shifted to 0 before scaling)."""
    outputs = []
    for temperature in ("0", "1e-300"):
        code, out, err = cli("bytes", "complete", "--model", tiny_dir, "--prompt-bytes",
                             "def ", "--max-bytes", "6", "--json",
                             "--temperature", temperature)  # fmt: skip
        assert code == 0, err
        outputs.append(json.loads(out)["completion"])
    assert outputs[0] == outputs[1]


def test_score_with_every_cover_is_below_canonical(cli, tiny_dir, tmp_path):
    """`--covers all` sums more tokenizations than the default's canonical ones, so
    without a beam (a beam would only give a lower bound) its bits per byte are lower."""
    text = tmp_path / "t.txt"
    text.write_text("The string module")
    found = {}
    for extra in ([], ["--covers", "all", "--beam", "0"]):
        code, out, err = cli(
            "bytes", "score", "--model", tiny_dir, "--file", text, "--json", *extra
        )
        assert code == 0, err
        found[bool(extra)] = json.loads(out)["bits_per_byte"]
    assert found[True] < found[False]


def test_ensemble_of_two_models(cli, tiny_dir):
    code, out, err = cli("bytes", "ensemble", "--model", tiny_dir, "--model", tiny_dir,
                         "--prompt-bytes", "The ", "--max-bytes", "5", "--weights", "0.25,0.75",
                         "--mode", "product", "--json")  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["next", "--prompt-bytes", "ab\\x4"], "bad escape"),
        (["complete", "--prompt-bytes", "a", "--max-bytes", "0"], "--max-bytes must be"),
        (["complete", "--prompt-bytes", "a", "--beam", "-1"], "--beam must be"),
        (["score", "--file", "-", "--covers", "some"], "invalid choice"),
        (["complete", "--prompt-bytes", "a", "--temperature", "-1"], "--temperature must be"),
        (["complete", "--prompt-bytes", "a", "--temperature", "inf"], "--temperature must be"),
        (["ensemble", "--prompt-bytes", "a"], "two or more --model"),
        (["ensemble", "--prompt-bytes", "a", "--model", "M", "--model", "M", "--weights",
          "0.5,0.6"], "sum to 1"),
        (["ensemble", "--prompt-bytes", "a", "--model", "M", "--model", "M", "--mode", "avg"],
         "unknown ensemble mode"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(cli, tiny_dir, argv, message):
    argv = [str(tiny_dir) if a == "M" else a for a in argv]
    if argv[0] != "ensemble":
        argv += ["--model", str(tiny_dir)]
    code, out, err = cli("bytes", *argv)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_model_whose_tokens_are_not_bytes_is_refused(cli, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1, "##llo": 2, "he": 3, "world": 4, ",": 5, "!": 6, "x": 7}
    wordpiece = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]",
                                        bos_token="[UNK]", eos_token="[UNK]")  # fmt: skip
    config = LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    code, _, err = cli("bytes", "ensemble", "--model", tmp_path, "--model", tmp_path,
                       "--prompt-bytes", "he")  # fmt: skip
    assert code == 2 and "cannot be mapped to bytes" in err, err
