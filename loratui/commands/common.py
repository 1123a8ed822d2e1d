"""What the command modules share: quiet libraries, the runs folder, a run named on the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from loratui.core.errors import LoratuiError


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # (the allocator's setting: loratui.train itself)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers
        import datasets

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # data errors are reported as one line
    except Exception:
        pass


def default_runs_dir() -> str:
    return os.environ.get("LORATUI_RUNS_DIR", "runs")


def named_source(spec: str, runs_dir: str | None) -> str:
    """A folder as given, or a run's name (``loratui runs`` lists names) in the runs folder: its adapter (its model,
    for full fine-tuning), else the run's folder."""
    path = Path(spec).expanduser()
    if path.exists() or len(path.parts) != 1:
        return spec
    run = Path(runs_dir or default_runs_dir()).expanduser() / spec
    if not run.is_dir():
        return spec
    return str(next((run / sub for sub in ("adapter", "model") if (run / sub).is_dir()), run))


def find_run(spec: str, runs_dir: str | None, field: str):
    """A run named on the command line: its folder, or its name in the runs folder (``loratui runs`` lists names)."""
    from loratui.core.runs import RunDir

    folder = Path(spec).expanduser()
    candidates = [folder]
    if len(folder.parts) == 1:
        candidates.append(Path(runs_dir or default_runs_dir()).expanduser() / spec)
    for path in candidates:
        run = RunDir(path)
        if run.config_path.is_file():
            return run
    where = " or ".join(str(c) for c in candidates)
    raise LoratuiError(f"no run folder at {where}", field=field,
                       hint="give a run's folder or a name from `loratui runs` (--runs-dir for another runs folder)")


def progress_printer(jsonl: bool) -> Callable[[str, float], None]:
    """A long command's progress: JSON lines for the app (``--jsonl``), else ``[ 35%] step`` lines."""

    def progress(step: str, frac: float) -> None:
        if jsonl:
            print(json.dumps({"kind": "progress", "step": step, "fraction": frac}), flush=True)
        else:
            print(f"[{frac:4.0%}] {step}", flush=True)

    return progress


def run_reported(jsonl: bool, work: Callable[[], Any]) -> tuple[Any, int | None]:
    """(work's result, None), or (None, exit code). With ``--jsonl`` a failure is also a ``failed`` line the app
    reads; a LoratuiError still raises for the command line's one-line error."""
    try:
        return work(), None
    except LoratuiError as err:
        if jsonl:
            message = f"{err.field}: {err.message}" if err.field else err.message
            print(json.dumps({"kind": "failed", "message": message, "hint": err.hint}), flush=True)
        raise
    except Exception as err:  # noqa: BLE001
        if not jsonl:
            raise
        print(json.dumps({"kind": "failed", "message": f"{type(err).__name__}: {err}".splitlines()[0],
                          "hint": None}), flush=True)
        return None, 1
