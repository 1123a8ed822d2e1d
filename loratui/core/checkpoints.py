"""Which checkpoints and adapters are whole: a kill or a full disk during a save must never leave a folder that
looks usable but is not.

The engine writes each checkpoint into ``checkpoints/.staging-checkpoint-N``, adds a ``loratui-complete.json``
marker listing every file with its size, and only then renames the folder to ``checkpoints/checkpoint-N``; old
checkpoints are renamed to ``.deleting-...`` before they are removed. A checkpoint is complete when its marker
matches the files on disk (or, for checkpoints written before the marker existed, when its trainer state parses
and its weights are whole). Light module: no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

MARKER = "loratui-complete.json"
STAGING_PREFIX = ".staging-"
DELETING_PREFIX = ".deleting-"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin",
                "model.safetensors.index.json", "pytorch_model.bin.index.json")


def checkpoint_step(path: Path) -> int | None:
    name = Path(path).name
    if not name.startswith("checkpoint-"):
        return None
    tail = name[len("checkpoint-"):]
    return int(tail) if tail.isdigit() else None


def safetensors_problem(path: Path) -> str | None:
    """None if ``path`` is a whole safetensors file (header parses and every tensor's bytes are there)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000 or 8 + n > size:
                return f"{path.name} is truncated (header)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return f"{path.name} is unreadable ({type(err).__name__})"
    if not isinstance(header, dict):
        return f"{path.name} has a bad header"
    end = 0
    for key, info in header.items():
        if key == "__metadata__" or not isinstance(info, dict):
            continue
        offsets = info.get("data_offsets") or [0, 0]
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        return f"{path.name} is truncated ({size} of {8 + n + end} bytes)"
    return None


def write_marker(folder: Path) -> None:
    """Record every file of ``folder`` with its size (the last file written before the folder is renamed)."""
    from loratui.core.fileio import atomic_write_json

    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MARKER}
    atomic_write_json(folder / MARKER, {"files": files})


def weights_problem(folder: Path) -> str | None:
    """None if ``folder`` holds whole model or adapter weights."""
    folder = Path(folder)
    present = [folder / f for f in WEIGHT_FILES if (folder / f).is_file()]
    if not present:
        return "no weights file (adapter_model.safetensors or model.safetensors)"
    for f in present:
        if f.suffix == ".safetensors":
            problem = safetensors_problem(f)
            if problem:
                return problem
        elif f.stat().st_size == 0:
            return f"{f.name} is empty"
    return None


def marker_problem(folder: Path) -> str | None:
    """None if every file the completion marker lists is there with its size."""
    try:
        files = json.loads((Path(folder) / MARKER).read_text())["files"]
        items = list(files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MARKER} is unreadable"
    for rel, size in items:
        p = Path(folder) / str(rel)
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != size:
            if p.suffix in EDITABLE and _readable(p):
                continue  # a config edited by hand (a path fixed, a trailing '/'): whole, just not as written
            return f"{rel} is {p.stat().st_size} bytes, {size} were written"
    return None


#: text files a user may edit by hand: a size change is not a cut-short copy when they still parse
EDITABLE = (".json", ".jinja", ".txt", ".md", ".yaml")


def _readable(path: Path) -> bool:
    try:
        text = path.read_text()
        if path.suffix == ".json":
            json.loads(text)
    except (OSError, ValueError):
        return False
    return True


def checkpoint_problem(folder: Path) -> str | None:
    """None if the checkpoint is complete, else why it is not (one short phrase)."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return marker_problem(folder) or weights_problem(folder)
    # written before the marker existed (or by another tool): check what resume needs
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save was cut short)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return "trainer_state.json is unreadable"
    return weights_problem(folder)


def adapter_problem(folder: Path) -> str | None:
    """None if an adapter folder is whole (config readable, weights complete), else why not: a kill or a full disk
    during an older save, a copy cut short, a file truncated by hand."""
    folder = Path(folder)
    try:
        json.loads((folder / "adapter_config.json").read_text())
    except FileNotFoundError:
        return "no adapter_config.json"
    except (OSError, ValueError):
        return "adapter_config.json is unreadable"
    if (folder / MARKER).is_file():
        problem = marker_problem(folder)
        if problem:
            return problem
    return weights_problem(folder)


def scan_checkpoints(checkpoints_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(complete checkpoints oldest first, [(incomplete checkpoint, why)])."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return [], []
    found = sorted((p for p in checkpoints_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
                   key=checkpoint_step)
    complete, skipped = [], []
    for p in found:
        problem = checkpoint_problem(p)
        if problem:
            skipped.append((p, problem))
        else:
            complete.append(p)
    return complete, skipped


def latest_complete(checkpoints_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint, and the newer incomplete ones passed over (with the reason)."""
    complete, skipped = scan_checkpoints(checkpoints_dir)
    best = complete[-1] if complete else None
    newer = [(p, why) for p, why in skipped if best is None or checkpoint_step(p) > checkpoint_step(best)]
    return best, newer


def remove_folder(path: Path) -> None:
    """Rename out of sight first, then delete: a kill half-way leaves a hidden folder, never a half checkpoint."""
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(f"{DELETING_PREFIX}{path.name}-{os.getpid()}")
    try:
        os.replace(path, doomed)
    except OSError:
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(checkpoints_dir: Path) -> list[Path]:
    """Remove staging and half-deleted folders that a killed process left behind."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    gone = []
    for p in checkpoints_dir.iterdir():
        if p.name.startswith((STAGING_PREFIX, DELETING_PREFIX)):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def rotate(checkpoints_dir: Path, keep: int | None) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and any incomplete checkpoint older than
    the newest complete one. Never touches the newest complete checkpoint."""
    complete, skipped = scan_checkpoints(checkpoints_dir)
    if not complete:
        return []
    newest = checkpoint_step(complete[-1])
    doomed = [p for p, _ in skipped if checkpoint_step(p) < newest]
    if keep and keep > 0 and len(complete) > keep:
        doomed += complete[:-keep]
    for p in doomed:
        remove_folder(p)
    return doomed


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 for a missing folder; a file that vanishes meanwhile counts 0): the one
    count for checkpoints, merged models and Compare's saved size."""
    total = 0
    for p in Path(path).rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
