"""One way to write a file so that a reader (or a crash) never sees half of it: write a temporary file in the
same folder, flush it to disk, then rename it over the target (``os.replace`` is atomic on POSIX)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "respect_umask"]

#: the process's umask, read once at import (reading it means setting it: not something to do from threads)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def respect_umask(folder: str | Path) -> None:
    """Give the files and folders under ``folder`` the modes a plain ``open`` would have (0644 / 0755 under umask
    022): temporary files are created 0600, and a teammate or a serving process running as another user must be
    able to read the weights."""
    folder = Path(folder)
    for p in [folder, *folder.rglob("*")]:
        try:
            if p.is_symlink():
                continue
            want = (0o777 if p.is_dir() else 0o666) & ~_UMASK
            if (p.stat().st_mode & 0o777) != want:
                os.chmod(p, want)
        except OSError:
            pass


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it 0600: give it the mode a plain open would
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    """Strict JSON (NaN and infinities are refused: convert them first) written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
