"""Studies: one config plus a grid of variations, expanded into runs that wait in the queue.

```yaml
study: minilm-lora-vs-full          # name: prefix of every run folder
base: minilm-sentiment.yaml         # a config file (relative to this file) ...
config:                             # ... and/or an inline config, laid over the base
  train: {max_steps: 150}
grid:                               # a cartesian product, applied to every variant
  lora.r: [4, 8, 16]
variants:                           # optional: a list of overrides; a list value expands like the grid
  - {method.kind: full, train.lr: 5.0e-5}
  - {method.kind: head-only, train.lr: 0.01}
  - {method.kind: lora, lora.r: [4, 8, 16]}
```

Keys are dotted config paths (``section.field``). A run that does not use LoRA ignores ``lora.*`` keys, so
``method.kind: [full, lora]`` x ``lora.r: [4, 8]`` gives three runs, not four; likewise a run whose objective is
not dpo ignores DPO's own keys (``method.loss_type``, ``method.label_smoothing``). Light module: yaml + pydantic
only.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loratui.core.config import LORA_METHODS, RunConfig, config_from_dict, load_config, resolve_paths
from loratui.core.config_errors import yaml_problem
from loratui.core.errors import ConfigError

STUDY_FILE = "study.json"
STUDY_KEYS = ("study", "base", "config", "grid", "variants", "description")
#: config fields whose value is itself a list: a list of lists expands, a flat list is one value
LIST_FIELDS = ("lora.target_modules", "lora.modules_to_save")
#: settings of DPO alone: a run of another objective leaves them out (as a full run leaves out lora.*)
DPO_ONLY = ("method.loss_type", "method.label_smoothing")


@dataclass
class PlannedRun:
    """One run of a study: its folder name, a short label and the full config."""

    name: str
    label: str
    overrides: dict[str, Any]
    config: RunConfig


@dataclass
class Study:
    name: str
    base: RunConfig
    runs: list[PlannedRun] = field(default_factory=list)
    source: str | None = None
    description: str = ""


def _expand(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    keys, choices = [], []
    for key, value in overrides.items():
        keys.append(key)
        if key in LIST_FIELDS:
            expand = isinstance(value, list) and value and all(isinstance(v, list) or v is None for v in value)
            choices.append(value if expand else [value])
        else:
            choices.append(value if isinstance(value, list) else [value])
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"'{key}' is not a config path", field="grid",
                              hint="use section.field, for example lora.r or method.kind")
        out.setdefault(section, {})[name] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


SHORT = {"method.kind": "", "method.objective": "", "method.beta": "beta", "lora.r": "r", "lora.alpha": "a", "train.lr": "lr", "lora.dropout": "drop",
         "train.batch_size": "bs", "train.max_steps": "steps", "train.epochs": "ep"}


def label_for(overrides: dict[str, Any], varying: list[str]) -> str:
    parts = []
    for key in varying:
        if key not in overrides:
            continue
        prefix = SHORT.get(key, key.rpartition(".")[2] + "=")
        parts.append(f"{prefix}{_value_text(overrides[key])}")
    return " ".join(parts) or "base"


def _name_part(label: str) -> str:
    text = "".join(c if c.isalnum() or c in "-_." else "-" for c in label.replace(" ", "-").replace("=", ""))
    while "--" in text:
        text = text.replace("--", "-")
    return text.strip("-").lower() or "base"


def parse_study(data: Any, *, base_dir: Path | None = None, source: str | None = None) -> Study:
    """A study from its YAML mapping (``base`` paths are resolved against ``base_dir``)."""
    if not isinstance(data, dict):
        raise ConfigError("a study file holds a mapping with study, base or config, grid and/or variants",
                          field=source or "study")
    unknown = [k for k in data if k not in STUDY_KEYS]
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' (allowed here: {', '.join(STUDY_KEYS)})", field="study")
    base_dir = Path(base_dir or ".")
    name = str(data.get("study") or (Path(source).stem if source else "study"))
    base_dict: dict[str, Any] = {}
    if data.get("base"):
        base_path = Path(str(data["base"])).expanduser()
        if not base_path.is_absolute():
            base_path = base_dir / base_path
        if not base_path.is_file():
            here = Path(__file__).resolve().parents[2] / "sample_configs" / Path(str(data["base"])).name
            base_path = here if here.is_file() else base_path
        base_cfg = load_config(base_path)
        base_dict = base_cfg.model_dump(exclude_defaults=True, mode="json")
    if data.get("config"):
        if not isinstance(data["config"], dict):
            raise ConfigError("config must be a mapping of sections", field="study.config")
        base_dict = _merge(base_dict, data["config"])
    base = resolve_paths(config_from_dict(base_dict, source="study.config"), base_dir)
    base_dict = base.model_dump(exclude_defaults=True, mode="json")

    grid = data.get("grid") or {}
    variants = data.get("variants") or [{}]
    if not isinstance(grid, dict):
        raise ConfigError("grid must map config paths to lists of values", field="study.grid",
                          hint="for example  lora.r: [4, 8, 16]")
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError("variants must be a list of mappings", field="study.variants",
                          hint="for example  - {method.kind: full, train.lr: 5.0e-5}")
    combos: list[dict[str, Any]] = []
    for variant in variants:
        for over in _expand({**grid, **variant}):
            combos.append(over)

    planned: list[tuple[dict, RunConfig]] = []
    seen: set[str] = set()
    base_objective = base.method.objective
    for over in combos:
        if over.get("method.objective", base_objective) != "dpo":  # DPO's own knobs mean nothing to the others
            over = {k: v for k, v in over.items() if k not in DPO_ONLY}
        try:
            cfg = config_from_dict(_merge(base_dict, _nest(over)), source="study")
        except ConfigError as err:
            raise ConfigError(f"variation {over}: {err}", field="study") from None
        if cfg.method.kind not in LORA_METHODS:
            over = {k: v for k, v in over.items() if not k.startswith("lora.")}
            cfg = config_from_dict(_merge(base_dict, _nest(over)), source="study")
        key = cfg.model_copy(update={"output": cfg.output.model_copy(update={"name": None})}).model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        planned.append((over, cfg))

    varying = []
    for key in dict.fromkeys(k for over, _ in planned for k in over):
        values = {json.dumps(over.get(key), sort_keys=True, default=str) for over, _ in planned}
        if len(values) > 1:
            varying.append(key)
    if "method.kind" in varying:  # a key that only follows the method (its learning rate) adds nothing to a label
        # (LoRA settings stay: "lora r4" says more than "lora")
        def follows_method(key: str) -> bool:
            seen_values: dict[str, str] = {}
            for over, cfg in planned:
                value = json.dumps(over.get(key), sort_keys=True, default=str)
                if seen_values.setdefault(cfg.method.kind, value) != value:
                    return False
            return True

        varying = [k for k in varying if k == "method.kind" or k.startswith("lora.") or not follows_method(k)]
    study = Study(name=name, base=base, source=source, description=str(data.get("description") or ""))
    names: set[str] = set()
    for over, cfg in planned:
        label = label_for(over, varying)
        run_name = f"{_name_part(name)}-{_name_part(label)}"
        i = 2
        while run_name in names:
            run_name = f"{_name_part(name)}-{_name_part(label)}-{i}"
            i += 1
        names.add(run_name)
        cfg.output.name = run_name
        study.runs.append(PlannedRun(run_name, label, over, cfg))
    if not study.runs:
        raise ConfigError("the study expands to no runs", field="study")
    return study


def load_study(path: str | Path) -> Study:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"no such file {path}", field="study", hint="give the path of a study YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML{yaml_problem(err)}", field="study") from None
    return parse_study(data, base_dir=path.parent, source=str(path))


def is_study_file(path: str | Path) -> bool:
    """True when the YAML file holds a study (has grid or variants) rather than a plain run config."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and ("grid" in data or "variants" in data or "study" in data)


def read_study_tag(run_path: str | Path) -> dict:
    """The study a run belongs to ({} when none): written into the run folder when the study was queued."""
    try:
        return json.loads((Path(run_path) / STUDY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_study_tag(run_path: str | Path, study: str, batch: str, label: str, overrides: dict,
                    index: int = 0) -> None:
    (Path(run_path) / STUDY_FILE).write_text(json.dumps(
        {"study": study, "batch": batch, "index": index, "label": label, "overrides": overrides}, indent=1,
        default=str) + "\n")


def study_runs(runs_dir: str | Path, study: str, batch: str | None = None) -> list[Path]:
    """Run folders of ``study`` (its newest batch unless ``batch`` is given), in the order they were planned."""
    found: list[tuple[str, int, Path]] = []
    try:
        folders = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir())
    except OSError:
        return []
    for p in folders:
        tag = read_study_tag(p)
        if tag.get("study") == study:
            found.append((str(tag.get("batch", "")), int(tag.get("index", 0) or 0), p))
    if not found:
        return []
    batch = batch or max(b for b, _, _ in found)
    chosen = [(i, p) for b, i, p in found if b == batch]
    return [p for _, p in sorted(chosen, key=lambda t: (t[0], t[1].name))]


def list_study_batches(runs_dir: str | Path) -> list[tuple[str, str, int]]:
    """(study, batch, runs in it) for every batch of every study in the runs folder, newest first: a study queued
    again is a new batch, and the finished one before it stays there to compare (a QA walk lost it)."""
    counts: dict[tuple[str, str], int] = {}
    try:
        folders = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
    except OSError:
        return []
    for p in folders:
        tag = read_study_tag(p)
        if tag.get("study"):
            key = (str(tag["study"]), str(tag.get("batch", "")))
            counts[key] = counts.get(key, 0) + 1
    return sorted(((name, batch, n) for (name, batch), n in counts.items()), key=lambda r: (r[1], r[0]),
                  reverse=True)


def list_studies(runs_dir: str | Path) -> list[tuple[str, str, int]]:
    """(study, newest batch, runs in it) for every study in the runs folder, newest first."""
    newest: dict[str, tuple[str, str, int]] = {}
    for row in list_study_batches(runs_dir):  # newest batch first: the first row of each study
        newest.setdefault(row[0], row)
    return list(newest.values())
