"""What the command modules share: quiet libraries, the runs folder, a run named on the command line."""

from __future__ import annotations

import os
from pathlib import Path

from loratui.core.errors import LoratuiError


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # variable-length batches fragment the CUDA caching allocator: measured on an H100 (bench/RESULTS.md),
    # expandable segments keep reserved memory close to what is allocated
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
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
