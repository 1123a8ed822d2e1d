"""Failures the engine turns into one line: out of memory, a full disk, and anything unexpected (with a hint)."""

from __future__ import annotations

from pathlib import Path

from loratui.core.config import RunConfig
from loratui.core.errors import RunError


def explain(err: Exception, cfg: RunConfig | None) -> tuple[str, str | None]:
    """One-line message and a hint for an unexpected failure."""
    name = type(err).__name__
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else name
    if "OutOfMemory" in name or "out of memory" in text.lower():
        bs = cfg.train.batch_size if cfg else "?"
        hint = (f"halve train.batch_size (now {bs}) and double train.grad_accum, enable "
                "train.gradient_checkpointing, lower data.max_length, or use method qlora")
        return f"out of GPU memory: {text}", hint
    if "CUDA" in text and "device-side" in text:
        return text, "check labels are within model.num_labels and token ids within the vocabulary"
    if isinstance(err, (ValueError, TypeError, KeyError)):
        return f"{name}: {text}", "see engine.log for the traceback"
    return f"{name}: {text}", "see engine.log for the traceback"


class DiskFullError(RunError):
    """The disk filled up while saving: one line with the folder and the free space needed."""


def is_out_of_memory(err: BaseException) -> bool:
    return any("OutOfMemory" in type(e).__name__ or "out of memory" in str(e).lower() for e in _error_chain(err))


def _error_chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_disk_full(err: BaseException, folder: Path | None = None) -> bool:
    import errno
    import shutil

    for e in _error_chain(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left" in text or "StorageFull" in text or "os error 28" in text or "Disk quota" in text:
            return True
    if folder is not None and any(isinstance(e, (OSError, RuntimeError)) for e in _error_chain(err)):
        try:  # torch.save says only "file write failed": look at the disk itself
            return shutil.disk_usage(folder).free < 4 * 2**20
        except OSError:
            return False
    return False


def disk_full_error(folder: Path, what: str, needed_bytes: int) -> DiskFullError:
    import shutil

    from loratui.core.checkpoints import fmt_bytes

    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    more = max(needed_bytes - free, 0) + 2**20
    return DiskFullError(f"disk full while saving {what} in {folder}: free at least {fmt_bytes(more)} more "
                         f"({fmt_bytes(free)} free now, about {fmt_bytes(needed_bytes)} needed)", field="disk",
                         hint="the last complete checkpoint is kept; free space, then resume: loratui train --resume "
                              + str(folder.parent if folder.name == "checkpoints" else folder))
