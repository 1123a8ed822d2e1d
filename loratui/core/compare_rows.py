"""The rows of a comparison: what each run trained, what it scored and what it cost, read from its folder.

Every number about time and progress is the one fold's (:func:`loratui.core.runs.summarize`), so Compare agrees with
Monitor, Runs, the Queue and ``loratui runs``. Light module: no torch, no Textual.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loratui.core.checkpoints import folder_bytes
from loratui.core.config import LORA_METHODS, RunConfig
from loratui.core.preference import reward_fields
from loratui.core.runs import RunDir
from loratui.core.step_history import EvalCurve

#: the LoRA settings shown beside full fine-tuning's '-' even when every LoRA run has the same
LORA_SHOWN = ("lora.r", "lora.alpha", "lora.target_modules")
#: config keys never worth showing as differences
IGNORED_KEYS = ("output.name", "output.runs_dir")


def ev_get(ev: Any, key: str) -> Any:
    """A field of an event, whether the reader hands out dicts or protocol models (extra fields included)."""
    if isinstance(ev, dict):
        return ev.get(key)
    value = getattr(ev, key, None)
    if value is None:
        extra = getattr(ev, "model_extra", None) or {}
        value = extra.get(key)
    return value


def summary_path(s: Any) -> Path:
    """The run folder of a run summary (``s.path``; its name under the working folder when it has none)."""
    path = getattr(s, "path", None)
    return Path(path) if path is not None else Path(s.name)


def state_text(state: Any) -> str:
    return str(getattr(state, "value", state))


@dataclass
class RunRow:
    """One run's column in the comparison."""

    name: str
    path: Path
    state: str = "waiting"
    label: str = ""
    study: str | None = None
    model: str = ""
    task: str = ""
    method: str = ""
    rank: int | None = None
    alpha: float | None = None
    targets: str = "-"
    trainable: int | None = None
    total: int | None = None
    metric_name: str = "eval_loss"
    final_metric: float | None = None
    best_metric: float | None = None
    final_eval_loss: float | None = None
    best_eval_loss: float | None = None
    f1: float | None = None
    objective: str = "sft"
    rewards: dict[str, float] = field(default_factory=dict)
    """A preference run's final rewards (TRL's keys: rewards/chosen, rejected, margins, accuracies): its last
    evaluation's, on held-out pairs, else its last logged step's (training pairs). Empty for other runs."""
    rewards_from: str = ""
    """held-out | train: where ``rewards`` come from ('' when there are none)."""
    best_margin: float | None = None
    """The largest held-out margin of its evaluations after training began (the base's step 0 is not one)."""
    best_pref_acc: float | None = None
    """The highest held-out preference accuracy of those evaluations."""
    train_time_s: float | None = None
    """Active time (the fold's ``elapsed``)."""
    wall_s: float | None = None
    """Wall time, first event to last (the fold's ``wall``)."""
    tokens_per_s: float | None = None
    peak_memory_gb: float | None = None
    host_peak_gb: float | None = None
    """A CPU run's peak resident memory (its engine's memory events)."""
    device: str = ""
    """Where it trained (the started event's: cuda:0, cpu, ...)."""
    size_bytes: int | None = None
    saved_as: str = "-"
    steps: int = 0
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> float | None:
        return self.trainable / self.total if self.trainable is not None and self.total else None


def ev_extra(ev: Any) -> dict:
    """The fields of an event beyond its model's (a preference run's rewards are such fields)."""
    return ev if isinstance(ev, dict) else (getattr(ev, "model_extra", None) or {})


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _targets(cfg: RunConfig | None, out_dir: Path | None) -> str:
    if cfg is None:
        return "-"
    if cfg.method.kind == "full":
        return "all weights"
    if cfg.method.kind == "head-only":
        return "head"
    if out_dir is not None:
        try:
            saved = json.loads((out_dir / "adapter_config.json").read_text()).get("target_modules")
            if saved:
                return ",".join(sorted(saved)) if isinstance(saved, list) else str(saved)
        except (OSError, json.JSONDecodeError):
            pass
    t = cfg.lora.target_modules
    if isinstance(t, list):
        return ",".join(sorted(t))
    if t:
        return t
    from loratui.core.presets import PRESETS

    if cfg.lora.preset in PRESETS:
        return ",".join(sorted(PRESETS[cfg.lora.preset]))
    return f"preset {cfg.lora.preset}" if cfg.lora.preset else "default"


def read_run(path: str | Path) -> RunRow:
    """Gather one run's figures from its folder."""
    from loratui.core.study import read_study_tag

    run = RunDir(Path(path))
    row = RunRow(name=run.name, path=run.path, state=state_text(run.state()))
    tag = read_study_tag(run.path)
    row.study, row.label = tag.get("study"), tag.get("label", "")
    cfg: RunConfig | None
    try:
        cfg = run.config()
    except Exception:
        cfg = None
    if cfg is not None:
        row.model, row.task, row.method = cfg.model.name, cfg.model.task, cfg.method.kind
        row.objective = cfg.method.objective
        if cfg.method.kind in LORA_METHODS:
            row.rank, row.alpha = cfg.lora.r, cfg.lora.alpha
        flat = flatten(cfg.model_dump(mode="json"))
        flat.pop("lora.preset", None)  # the modules adapted, however named: a preset or its list are the same run
        if cfg.method.kind not in LORA_METHODS:  # LoRA settings mean nothing to full or head-only runs
            flat = {k: ("-" if k.startswith("lora.") else v) for k, v in flat.items()}
        else:
            flat["lora.target_modules"] = _targets(cfg, None)
        row.config = {k: v for k, v in flat.items() if k not in IGNORED_KEYS}
    row.metric_name = "accuracy" if row.task == "seq-cls" else "eval_loss"
    step_rewards: dict[str, float] = {}
    eval_rewards: dict[str, float] = {}
    curve = EvalCurve()
    for ev in run.events():
        kind = ev_get(ev, "kind")
        if kind == "started":
            row.trainable = (ev_get(ev, "trainable_params") or row.trainable)
            row.total = (ev_get(ev, "total_params") or row.total)
            row.method = row.method or (ev_get(ev, "method") or "")
            row.model = row.model or (ev_get(ev, "model") or "")
        elif kind == "step":
            row.steps = max(row.steps, int(ev_get(ev, "step") or 0))
            step_rewards = reward_fields(ev_extra(ev)) or step_rewards
        elif kind == "eval":
            loss = ev_get(ev, "eval_loss")
            trained = ev_get(ev, "step") != 0  # step 0 is the base model: the curve's start, never "best"
            if loss is not None and curve.takes(bool(ev_get(ev, "final")), ev_get(ev, "examples")):
                row.eval_curve.append((int(ev_get(ev, "step") or 0), float(loss)))
            if loss is not None and trained:
                row.final_eval_loss = loss
                row.best_eval_loss = loss if row.best_eval_loss is None else min(row.best_eval_loss, loss)
            value = ev_get(ev, row.metric_name) if trained else None
            if value is not None:
                row.final_metric = value
                if row.best_metric is None:
                    row.best_metric = value
                else:
                    row.best_metric = max(row.best_metric, value) if row.metric_name == "accuracy" else \
                        min(row.best_metric, value)
            if ev_get(ev, "f1") is not None:
                row.f1 = ev_get(ev, "f1")
            rewards = reward_fields(ev_extra(ev)) if trained else {}
            if rewards:
                eval_rewards = rewards
                row.best_margin = _best(row.best_margin, rewards.get("rewards/margins"))
                row.best_pref_acc = _best(row.best_pref_acc, rewards.get("rewards/accuracies"))
        elif kind == "memory":
            peak = ev_get(ev, "peak_allocated_gb")
            if peak is not None:
                row.peak_memory_gb = max(row.peak_memory_gb or 0.0, float(peak))
            host = ev_get(ev, "host_peak_gb")
            if host is not None:
                row.host_peak_gb = max(row.host_peak_gb or 0.0, float(host))
        elif kind == "finished":
            row.steps = max(row.steps, int(ev_get(ev, "step") or 0))
    row.rewards = eval_rewards or step_rewards
    row.rewards_from = "held-out" if eval_rewards else "train" if step_rewards else ""
    # time and throughput are the one fold's (every engine process's part, as Monitor, Runs, the Queue and
    # `loratui runs` show them): the finished event's runtime_s and the steps' own rates count only a part
    from loratui.core.runs import summarize

    folded = summarize(run, now=time.time())  # a running run ticks, as the Monitor shows it
    row.train_time_s, row.wall_s, row.tokens_per_s = folded.elapsed, folded.wall, folded.tokens_per_s
    row.device = folded.device or ""
    for what, folder in (("adapter", run.adapter_dir), ("model", run.path / "model")):
        if folder.is_dir():
            row.saved_as, row.size_bytes = what, folder_bytes(folder)
            if cfg is not None:
                row.targets = _targets(cfg, folder)
            break
    else:
        row.targets = _targets(cfg, None)
    return row


def _best(best: float | None, value: float | None) -> float | None:
    if value is None:
        return best
    return value if best is None else max(best, value)


def read_runs(paths: list[str | Path]) -> list[RunRow]:
    return [read_run(p) for p in paths]


class RowCache:
    """Re-reads a run only when one of its files changed (a long run's events file is not parsed every refresh)."""

    def __init__(self) -> None:
        self._rows: dict[Path, tuple[tuple, RunRow]] = {}

    @staticmethod
    def _key(path: Path) -> tuple:
        out = []
        for name in ("events.jsonl", "status.json", "config.yaml", "launch.json", "adapter", "model"):
            try:
                st = (path / name).stat()
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def read(self, paths: list[str | Path]) -> list[RunRow]:
        rows = []
        for p in map(Path, paths):
            key = self._key(p)
            cached = self._rows.get(p)
            if cached is None or cached[0] != key or cached[1].state in ("running", "starting", "waiting", "stopping"):
                cached = (key, read_run(p))
                self._rows[p] = cached
            rows.append(cached[1])
        return rows


def config_differences(rows: list[RunRow]) -> list[tuple[str, list[Any]]]:
    """(key, value per run) for every config key whose value is not the same in all runs."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.config if k not in keys]
    out = []
    for k in keys:
        values = [r.config.get(k) for r in rows]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            # a LoRA setting all LoRA runs share differs only from full fine-tuning's '-': the method row says it
            # (the rank and the modules still show, to tell what the LoRA runs were)
            shared = {json.dumps(v, sort_keys=True, default=str) for v in values if v != "-"}
            if k.startswith("lora.") and k not in LORA_SHOWN and len(shared) <= 1:
                continue
            out.append((k, values))
    return out
