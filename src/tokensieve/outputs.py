"""Writing results without ever touching what a user gave us.

Three rules, one module:

- **Guard** (`check_output`): an output may not be, contain or lie inside any input (a
  model, a tokenizer, a text file, the model cache), nor be or contain the current or
  home directory, nor lie under a file. It is checked before any slow work, so a bad
  ``--out`` costs nothing.
- **Stage and rename** (`write_atomic`, `staged_directory`, `write_directory`): every file
  and every directory is written under a hidden temporary name beside its target and
  renamed into place, so an interruption leaves either the old state or the complete new
  one. SIGINT, SIGTERM and SIGHUP unwind through the cleanup (`errors.termination_unwinds`).
- **Never reuse**: a report directory that already holds files is left alone and a fresh
  sibling (``report-2``, ``report-3``, ...) is used; a model directory is replaced only on
  request (``replace=True``, the CLI's ``--force``), and never when it holds an input.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokensieve.errors import UserError, termination_unwinds


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` via a temp file + rename (atomic on POSIX)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with termination_unwinds():
            with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the umask
            os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _cannot_write(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _cannot_write(path: Path, exc: OSError) -> UserError:
    return UserError(f"cannot write {path}: {exc.strerror or exc}")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def check_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    *,
    existing: str = "fresh",
) -> Path:
    """Refuse an output path that could touch an input; returns it as a `Path`.

    `existing` says what happens to a directory already at `out`: ``"fresh"`` (a sibling
    is used, see `fresh_directory`), ``"refuse"`` (an error unless it is empty) or
    ``"replace"`` (it will be replaced). Inputs that are ``None`` are skipped.
    """
    if not str(out).strip():
        raise UserError("the output path is empty")
    path = Path(out).expanduser()
    target = path.resolve()
    for place, what in ((Path.cwd(), "the current directory"), (Path.home(), "your home")):
        if target == place.resolve() or target in place.resolve().parents:
            raise UserError(f"refusing to write to {path}: it is or holds {what}")
    for given in inputs:
        if given is None or not str(given).strip():
            continue
        source = Path(given).expanduser().resolve()
        if target == source or source in target.parents or target in source.parents:
            relation = ("is" if target == source else
                        "lies inside" if source in target.parents else "holds")  # fmt: skip
            raise UserError(f"refusing to write to {path}: it {relation} the input {given}")
    _check_writable_place(path)
    if path.exists() and not path.is_dir() and existing != "fresh":
        raise UserError(f"{path} is a file; give a new directory")
    if existing == "refuse" and path.is_dir() and any(path.iterdir()):
        raise UserError(f"{path} exists; choose a new `out` or pass `force`")
    return path


def _check_writable_place(path: Path) -> None:
    """The nearest existing ancestor must be a directory we may write in."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {ancestor} is not writable")


def fresh_directory(path: str | Path) -> Path:
    """Return `path` if it is missing or empty, else the first free ``path-N``.

    The directory is created, so two runs started together do not pick the same one.
    """
    base = Path(path)
    if not base.name:
        raise UserError(f"'{path}' names no directory")
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()):
                return candidate
        except OSError as exc:
            raise _cannot_write(candidate, exc) from None
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")


@contextlib.contextmanager
def staged_directory(target: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a hidden staging directory beside `target`; on success it becomes `target`.

    An existing empty `target` is replaced silently; a non-empty one only with `replace`
    (swapped out, then removed; restored if the swap is interrupted). On any exception,
    SIGTERM included, the staging directory is removed and `target` is as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging",
                                        dir=target.parent))  # fmt: skip
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    try:
        with termination_unwinds():
            yield staging
            pause_point("staged")
            follow_umask(staging)
            _move_into_place(staging, target, replace)
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path, replace: bool) -> None:
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        os.replace(staging, target)  # rename(2) may replace an empty directory
        return
    if not replace:
        raise UserError(f"{target} appeared while writing; nothing was replaced")
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    previous = holder / "previous"
    try:
        os.replace(target, previous)
        os.replace(staging, target)
    except BaseException:
        if previous.exists() and not target.exists():
            os.replace(previous, target)
        raise
    finally:
        shutil.rmtree(holder, ignore_errors=True)


@contextlib.contextmanager
def new_directory(out: str | Path) -> Iterator[tuple[Path, Path]]:
    """Yield ``(staging, final)``: fill `staging`; on success it becomes `final`, a fresh
    directory at `out` (or ``out-N``, see `fresh_directory`), all at once."""
    final = fresh_directory(out)
    try:
        with staged_directory(final) as staging:
            yield staging, final
    except BaseException:
        with contextlib.suppress(OSError):
            final.rmdir()  # the reserved name, still empty
        raise


def follow_umask(directory: Path) -> None:
    """Give `directory` and everything in it the modes the user's umask asks for.

    mkdtemp makes 0700 and safetensors writes 0600: without this a model written for a
    shared machine would be readable by its owner only."""
    mask = _umask()
    os.chmod(directory, 0o777 & ~mask)
    for root, folders, files in os.walk(directory):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def write_directory(out: str | Path, files: dict[str, str | bytes]) -> Path:
    """Write `files` (name → content) into a new directory at `out` (or ``out-N``)."""
    with new_directory(out) as (staging, final):
        for name, data in files.items():
            mode = "wb" if isinstance(data, bytes) else "w"
            with open(staging / name, mode, encoding=None if mode == "wb" else "utf-8") as f:
                f.write(data)
    return final


def pause_point(name: str) -> None:
    """A test hook: when ``TOKENSIEVE_PAUSE_AT`` names this point, touch the file named by
    ``TOKENSIEVE_PAUSE_FLAG`` and wait, so a test can send a signal at exactly this point.
    Costs one dictionary lookup otherwise."""
    if os.environ.get("TOKENSIEVE_PAUSE_AT") != name:
        return
    flag = os.environ.get("TOKENSIEVE_PAUSE_FLAG")
    if flag:
        Path(flag).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("TOKENSIEVE_PAUSE_SECONDS", "60")))


def json_text(value, *, indent: int | None = 1) -> str:
    """JSON that every parser reads: NaN and ±infinity become ``null`` (Python would
    write the invalid tokens ``NaN``/``Infinity``), text stays UTF-8."""
    return json.dumps(_finite(value), ensure_ascii=False, indent=indent, allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
