"""Finding, describing and deleting PEFT adapter folders (any folder holding ``adapter_config.json``).

Light module: json + the safetensors header only (no torch, no numpy needed), no textual.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from datetime import datetime
from math import prod
from pathlib import Path

import yaml

from loratui.core.errors import LoratuiError
from loratui.core.step_history import StepFigures

__all__ = ["AdapterInfo", "find_adapters", "read_adapter", "delete_adapter", "safetensors_param_count",
           "adapter_figures"]

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors",)
#: folders never worth descending into while looking for adapters
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".cache", ".hg", ".svn", "wandb"}
MAX_DEPTH = 4


@dataclass
class AdapterInfo:
    path: Path
    name: str
    """Run name for a run's final adapter, run/checkpoint-N for a checkpoint, else the folder name."""
    base_model: str | None = None
    task: str | None = None
    peft_type: str | None = None
    r: int | None = None
    alpha: float | None = None
    targets: list[str] | str | None = None
    trainable_params: int | None = None
    """Sum of the tensor sizes in adapter_model.safetensors (None when there is none)."""
    created: float = 0.0
    """Modification time of adapter_config.json (seconds since the epoch)."""
    size: int = 0
    """Bytes of every file in the folder."""
    files: list[tuple[str, int]] = field(default_factory=list)
    """(relative name, bytes), sorted by name."""
    run: str | None = None
    """The run folder name when it belongs to a run."""
    kind: str = "folder"
    """adapter (a run's final adapter), checkpoint, or folder (anywhere else)."""
    error: str | None = None
    """Why adapter_config.json could not be read, when it could not; or why the adapter is incomplete."""
    incomplete: str | None = None
    """Why the adapter is not whole (truncated weights, a save cut short); None when it is complete."""

    @property
    def targets_text(self) -> str:
        if self.targets is None:
            return "-"
        if isinstance(self.targets, str):
            return self.targets
        return ", ".join(self.targets)

    @property
    def created_text(self) -> str:
        return datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M") if self.created else "-"


def safetensors_param_count(path: str | Path) -> int:
    """Number of parameters in a .safetensors file, read from its JSON header (no tensor is loaded)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 1024 * 1024:
            raise ValueError(f"{path} has an implausible safetensors header ({n} bytes)")
        header = json.loads(fh.read(n))
    return sum(prod(v.get("shape", [])) for k, v in header.items() if k != "__metadata__")


def folder_files(folder: Path) -> list[tuple[str, int]]:
    """Every file under ``folder`` (links left out) as (relative path, bytes), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fn in filenames:
            p = Path(dirpath) / fn
            try:
                if p.is_symlink():
                    continue
                size = p.stat().st_size
            except OSError:
                continue
            out.append((p.relative_to(folder).as_posix(), size))
    return sorted(out)


def _run_context(folder: Path) -> tuple[str | None, str]:
    """(run name, kind) for runs/<run>/adapter and runs/<run>/checkpoints/<ck>."""
    def is_run(p: Path) -> bool:
        return (p / "config.yaml").is_file() and ((p / "status.json").is_file() or (p / "events.jsonl").is_file())

    if folder.name == "adapter" and is_run(folder.parent):
        return folder.parent.name, "adapter"
    if folder.parent.name == "checkpoints" and is_run(folder.parent.parent):
        return folder.parent.parent.name, "checkpoint"
    return None, "folder"


def _named_base(folder: Path, kind: str) -> str | None:
    """The base model as the user named it (an alias such as minilm-l6-v2), not the cache path peft recorded."""
    try:
        meta = folder / "loratui.json"
        if meta.is_file():
            return json.loads(meta.read_text()).get("base_model")
        if kind == "checkpoint":  # runs/NAME/checkpoints/checkpoint-N: the run's config names the model
            cfg = yaml.safe_load((folder.parent.parent / "config.yaml").read_text())
            return ((cfg or {}).get("model") or {}).get("name")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    return None


def read_adapter(folder: str | Path) -> AdapterInfo:
    """Describe one adapter folder."""
    folder = Path(folder)
    cfg_path = folder / CONFIG_NAME
    run, kind = _run_context(folder)
    if kind == "adapter":
        name = run or folder.name
    elif kind == "checkpoint":
        name = f"{run}/{folder.name}"
    else:
        name = folder.name
    info = AdapterInfo(path=folder, name=name, run=run, kind=kind)
    try:
        cfg = json.loads(cfg_path.read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        cfg = {}
        info.error = f"{CONFIG_NAME} unreadable: {err}"
    info.base_model = _named_base(folder, kind) or cfg.get("base_model_name_or_path")
    info.task = cfg.get("task_type")
    info.peft_type = cfg.get("peft_type")
    info.r = cfg.get("r")
    info.alpha = cfg.get("lora_alpha")
    targets = cfg.get("target_modules")
    info.targets = sorted(targets) if isinstance(targets, list) else targets
    try:
        info.created = cfg_path.stat().st_mtime
    except OSError:
        pass
    for wname in WEIGHT_NAMES:
        wpath = folder / wname
        if wpath.is_file():
            try:
                info.trainable_params = safetensors_param_count(wpath)
            except (OSError, ValueError) as err:
                info.error = info.error or f"{wname} unreadable: {err}"
            break
    info.files = folder_files(folder)
    info.size = sum(size for _, size in info.files)
    from loratui.core.checkpoints import adapter_problem

    problem = adapter_problem(folder)
    if problem and not (problem.startswith("no weights") and any(n.endswith(".bin") for n, _ in info.files)):
        info.incomplete = problem
        info.error = info.error or f"incomplete: {problem}"
    return info


def _is_adapter(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file()


def _walk(folder: Path, depth: int, found: list[Path], seen: set[Path]) -> None:
    try:
        real = folder.resolve()
    except OSError:
        return
    if real in seen:
        return
    seen.add(real)
    if _is_adapter(folder):
        found.append(folder)
        return
    run_name, _ = _run_context(folder / "adapter")
    if run_name is not None:  # a run folder: only adapter/ and checkpoints/* can hold adapters
        for cand in [folder / "adapter", *sorted((folder / "checkpoints").glob("[!.]*"))]:
            if cand.is_dir() and _is_adapter(cand):
                found.append(cand)
        return
    if depth <= 0:
        return
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        if child.name in SKIP_DIRS:
            continue
        _walk(child, depth - 1, found, seen)


def find_adapters(folders: list[str | Path], max_depth: int = MAX_DEPTH) -> list[AdapterInfo]:
    """Every adapter folder under ``folders``, newest first.

    Run folders are looked into only at ``adapter/`` and ``checkpoints/*``; other folders are searched
    recursively up to ``max_depth`` levels (hidden folders, .git, virtual environments skipped). A folder
    listed twice (or reached through a symlink) is reported once.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for folder in folders:
        folder = Path(folder).expanduser()
        if folder.is_dir():
            _walk(folder, max_depth, found, seen)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    infos = [read_adapter(p) for p in unique.values()]
    infos.sort(key=lambda a: (-a.created, a.name))
    return infos


def adapter_figures(adapters: list[AdapterInfo]) -> dict[str, StepFigures]:
    """Each run adapter's step and the run's figures there (adapter path -> :class:`StepFigures`): a checkpoint holds
    the step in its name, the run's adapter the step its finished or stopped event saved it at. The figures come from
    the run's events through the one fold, so they are the Monitor's and the Runs list's. Folders outside a run, and
    runs whose events say nothing of that step, are left out."""
    from loratui.core.fold import RunFold
    from loratui.core.protocol import EventTail

    out: dict[str, StepFigures] = {}
    folds: dict[Path, RunFold] = {}
    for a in adapters:
        run = a.path.parent if a.kind == "adapter" else a.path.parent.parent if a.kind == "checkpoint" else None
        if run is None:
            continue
        if run not in folds:
            try:
                folds[run] = RunFold().add_all(EventTail(run / "events.jsonl").poll())
            except (OSError, ValueError):
                continue
        history = folds[run].history
        if a.kind == "checkpoint":
            m = re.fullmatch(r"checkpoint-(\d+)", a.path.name)
            step = int(m.group(1)) if m else None
        else:
            step = history.adapter_step
        if step is not None:
            out[str(a.path)] = history.at(step)
    return out


def delete_adapter(path: str | Path) -> None:
    """Remove one adapter folder (and nothing else). Refuses a folder that is not an adapter."""
    path = Path(path)
    if path.is_symlink():
        raise LoratuiError(f"{path} is a symbolic link", hint="delete the folder it points to instead")
    if not path.is_dir():
        raise LoratuiError(f"{path} is not a folder", hint="pick an adapter from the list")
    if not _is_adapter(path):
        raise LoratuiError(f"{path} holds no {CONFIG_NAME}, so it is not an adapter; nothing was deleted")
    nested = [p for p in path.rglob(CONFIG_NAME) if p.parent != path]
    if nested:
        raise LoratuiError(f"{path} holds other adapters ({nested[0].parent}); nothing was deleted",
                           hint="delete the inner adapters one at a time")
    shutil.rmtree(path)
