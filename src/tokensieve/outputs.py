"""Writing results without ever overwriting what a user gave us.

Every file goes to a temporary name in the same directory and is renamed into place,
so an interrupted run leaves either the old state or the complete new file, never a
half-written one. Output directories that already hold files are never reused: a
fresh sibling (``report-2``, ``report-3``, ...) is chosen instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` via a temp file + rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def fresh_directory(path: str | Path) -> Path:
    """Return `path` if it is missing or empty, else the first free ``path-N``.

    The directory is created, so two runs started together do not pick the same one.
    """
    base = Path(path)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()):
                return candidate
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
