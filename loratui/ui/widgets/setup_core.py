"""The setup screen's door into the core: every heavy import happens inside a function, called from a thread worker.

Keeping these calls in one small module lets tests swap them for fixed values (``monkeypatch.setattr(setup_core,
"count_params", ...)``) and keeps ``import loratui.ui.app`` free of torch, transformers, peft and datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loratui.core.config import RunConfig
from loratui.core.errors import LoratuiError
from loratui.ui.messages import EstimateResult, FieldProblem

# -- heavy core (run in the helper process of loratui.ui.offload; call from a worker thread) --------------------------


def _offload(target: str, *args: Any) -> Any:
    from loratui.ui import offload  # multiprocessing and concurrent.futures: not before the first frame

    return offload.call(target, *args)



def count_params(cfg: RunConfig) -> Any:
    return _offload("loratui.train.estimate:count_params", cfg)


def estimate_memory(cfg: RunConfig) -> Any:
    return _offload("loratui.train.estimate:estimate_memory", cfg)


def list_linear_layers(cfg: RunConfig) -> list[str]:
    return list(_offload("loratui.train.models:list_linear_layers", cfg))


def query_gpus() -> list[Any] | None:
    """GPUs with free memory; [] when there is no NVIDIA GPU; None when the GPU module is not there."""
    try:
        from loratui.core.gpu import query_gpus as _query
    except ImportError:
        return None
    return list(_query())


def preflight(cfg: RunConfig) -> None:
    _offload("loratui.train.tasks:preflight", cfg)


def preview(cfg: RunConfig, n: int = 3) -> list[Any]:
    return _offload("loratui.train.tasks:preview", cfg, n)


def create_run(cfg: RunConfig, runs_dir: str | Path | None) -> Any:
    from loratui.core.runs import create_run as _create

    return _create(cfg, runs_dir)


def launch_detached(run: Any) -> int:
    from loratui.core.runs import launch_detached as _launch

    return _launch(run)


# -- composed steps ---------------------------------------------------------------------------------------------


def one_line(err: BaseException) -> str:
    """A user-facing one-line description of any error."""
    if isinstance(err, LoratuiError):
        return str(err)
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, (ImportError, OSError, ValueError, KeyError, RuntimeError)) and type(err).__name__ not in text:
        text = f"{type(err).__name__}: {text}"
    return text[:300]


def field_problem(err: BaseException) -> FieldProblem | None:
    """``err`` as a field's problem (None when it names no field): its few words when it has them (the message's
    details then stay in the message, shown by the launch's error dialog), else its message."""
    if not isinstance(err, LoratuiError) or not err.field:
        return None
    if err.summary:
        return FieldProblem(err.field, err.summary, err.hint)
    head, paren, rest = err.message.partition(" (")  # 'X could not be read (what the library said)'
    if paren and rest.endswith(")"):
        return FieldProblem(err.field, head, err.hint, rest[:-1])
    return FieldProblem(err.field, err.message, err.hint)


def compute_estimate(cfg: RunConfig, want_layers: bool = True) -> EstimateResult:
    """Everything the side panel shows. Never raises: each part carries its own error line."""
    result = EstimateResult()
    if want_layers and cfg.uses_lora:
        try:
            result.layers = list_linear_layers(cfg)
        except Exception:  # the params/memory parts report the same problem in words
            result.layers = None
    failed: list[BaseException] = []
    try:
        pc = count_params(cfg)
        result.trainable, result.total = int(pc.trainable), int(pc.total)
    except Exception as err:
        result.params_error = one_line(err)
        failed.append(err)
    try:
        result.rows = list(estimate_memory(cfg).rows)
    except Exception as err:
        result.memory_error = one_line(err)
        failed.append(err)
    if len(failed) == 2 and result.params_error == result.memory_error:
        result.problem = field_problem(failed[0])
    try:
        result.gpus = query_gpus()
    except Exception as err:
        result.gpus, result.gpu_error = [], one_line(err)
    return result


def launch(cfg: RunConfig, runs_dir: str | Path | None) -> tuple[Any, int]:
    """Preflight, create the run folder, start the engine detached. Raises LoratuiError on bad input."""
    preflight(cfg)
    run = create_run(cfg, runs_dir)
    pid = launch_detached(run)
    return run, pid


# -- sample configs ---------------------------------------------------------------------------------------------


def sample_configs_dirs() -> list[Path]:
    """Where sample configs live: ./sample_configs (a checkout) and the one next to the package."""
    here = Path(__file__).resolve().parents[3] / "sample_configs"
    out = []
    for d in (Path.cwd() / "sample_configs", here):
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def list_sample_configs() -> list[Path]:
    """The sample run configs (Setup's Open); the studies beside them are no run config (the Queue takes those)."""
    from loratui.core.study import is_study_file

    files: list[Path] = []
    for d in sample_configs_dirs():
        files += sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file() and not is_study_file(p))
    return files


def study_note(path: str | Path) -> str | None:
    """The one line for a study file opened as a run config (its study, base and grid read as unknown keys, and the
    form filled with defaults launched a run under the study's name: QA walk); None for any other file."""
    from loratui.core.study import is_study_file

    if not is_study_file(path):
        return None
    return f"{Path(path).name} is a study: queue it with `loratui study {path}` or the Queue (w)"


def find_config(value: str) -> Path:
    """A config path as typed; 'sample_configs/NAME.yaml' (or NAME.yaml) not found here is the shipped sample of
    that name (the Queue's example path failed outside a checkout: QA walk)."""
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute() or path.parent.name not in ("", "sample_configs"):
        return path
    return next((d / path.name for d in sample_configs_dirs() if (d / path.name).is_file()), path)


def demo_config_path() -> Path | None:
    for d in sample_configs_dirs():
        p = d / "smollm2-demo.yaml"
        if p.is_file():
            return p
    return None
