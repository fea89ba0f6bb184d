"""What every capability's command line shares: one-line usage errors, reading a
user's text files, the shared options, and quiet libraries.

Imports nothing heavy: the parsers are built and checked before torch is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import warnings
from pathlib import Path

from tokensieve.errors import UserError, check_seed


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(message)


MODEL_HELP = "local HF model directory or .gguf file (default: the embedded SmolLM2-135M)"


def seed_option(text: str) -> int:
    """argparse type of every ``--seed``: an integer NumPy's generator accepts."""
    try:
        seed = int(text)
        check_seed(seed)
    except ValueError as exc:  # UserError is one
        message = f"must be an integer 0 to 2**32 - 1, got {text!r}"
        raise argparse.ArgumentTypeError(message) from exc
    return seed


def add_common(parser: argparse.ArgumentParser, *names: str) -> None:
    """The options many commands share, spelled and explained once: model, seed, quiet."""
    if "model" in names:
        parser.add_argument("--model", help=MODEL_HELP)
    if "seed" in names:
        parser.add_argument("--seed", type=seed_option, default=0, help="random seed (default 0)")
    if "quiet" in names:
        parser.add_argument("--quiet", action="store_true", help="no progress bars or logs")
    if "device" in names:
        parser.add_argument(
            "--device", default="cpu", help="where the model runs: cpu (default), cuda, mps"
        )


def checked_device(name: str):
    """The torch device `name` names, or a one-line error when this machine has none."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device: '{name}' is not a device (cpu, cuda, cuda:1, mps)") from None
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None)}.get(device.type)
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device: the cache follows cpu, cuda or mps models, not {name}")
    if backend is not None and not backend.is_available():
        raise UserError(f"--device {name}: no {device.type} device is available here")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise UserError(f"--device {name}: this machine has {count} CUDA device(s)")
    return device


def read_text_file(name: str) -> str:
    """A user's UTF-8 text file ('-' is standard input), or a one-line error."""
    if name == "-":
        data, shown = sys.stdin.buffer.read(), "standard input"
    else:
        path = Path(name)
        try:
            if path.is_dir():
                raise UserError(f"cannot read '{name}': it is a directory, not a text file")
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"cannot read '{name}': no such file") from None
        except OSError as exc:  # permissions, a folder on the way that may not be searched
            raise UserError(f"cannot read '{name}': {exc.strerror or exc}") from None
        shown = f"'{name}'"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{shown} is not UTF-8 text (byte {exc.start})") from None


def quiet_libraries(quiet: bool) -> None:
    """transformers says only errors; with `quiet`, no progress bars and no warnings
    either (deprecation notices from the libraries we build on are not the user's)."""
    import transformers

    transformers.logging.set_verbosity_error()
    if quiet:
        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore")
        for name in ("trl", "accelerate", "datasets", "bitsandbytes", "tokensieve"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            import datasets

            datasets.disable_progress_bars()
            datasets.logging.set_verbosity_error()
        except ImportError:  # the rl extra is not installed
            pass


_TYPES = {"int": int, "float": float, "str": str, "str | None": str, "int | None": int}


def add_dataclass_options(parser: argparse.ArgumentParser, config_class) -> None:
    """One option per field of `config_class` (a dataclass declared once, TRL's style):
    ``--field-name``, its type and default, ``help`` and ``choices`` from the field's
    metadata. `config_from_args` builds the dataclass back from the parsed options."""
    for spec in dataclasses.fields(config_class):
        help_text = spec.metadata.get("help", "").replace("%", "%%")
        options = {"type": _TYPES[str(spec.type)], "help": help_text}
        if "choices" in spec.metadata:
            options["choices"] = spec.metadata["choices"]
        if spec.default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = spec.default
            if spec.default is not None:
                options["help"] += " (default %(default)s)"
        parser.add_argument("--" + spec.name.replace("_", "-"), **options)


def config_from_args(config_class, args: argparse.Namespace):
    """The dataclass `add_dataclass_options` declared, from parsed options."""
    return config_class(**{spec.name: getattr(args, spec.name)
                           for spec in dataclasses.fields(config_class)})  # fmt: skip
