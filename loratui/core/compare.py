"""Runs side by side: what each trained, what it scored, what it cost; exported as CSV and Markdown.

Everything comes from the run folders (config.yaml, events.jsonl, status.json, the saved adapter or model), so a
comparison works for runs from any session, finished or not. Light module: no torch, no Textual, no plotext (the
Markdown's charts are drawn here with block characters; the Compare screen draws its own with plotext).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loratui.core.config import LORA_METHODS, RunConfig
from loratui.core.runs import RunDir

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
    state: str = "created"
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
    train_time_s: float | None = None
    wall_s: float | None = None
    tokens_per_s: float | None = None
    peak_memory_gb: float | None = None
    size_bytes: int | None = None
    saved_as: str = "-"
    steps: int = 0
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> float | None:
        return self.trainable / self.total if self.trainable is not None and self.total else None


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def folder_size(path: Path) -> int:
    try:
        return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    except OSError:
        return 0


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
        if cfg.method.kind in LORA_METHODS:
            row.rank, row.alpha = cfg.lora.r, cfg.lora.alpha
        flat = flatten(cfg.model_dump(mode="json"))
        if cfg.method.kind not in LORA_METHODS:  # LoRA settings mean nothing to full or head-only runs
            flat = {k: ("-" if k.startswith("lora.") else v) for k, v in flat.items()}
        row.config = {k: v for k, v in flat.items() if k not in IGNORED_KEYS}
    row.metric_name = "accuracy" if row.task == "seq-cls" else "eval_loss"
    tps: list[float] = []
    for ev in run.events():
        kind = ev_get(ev, "kind")
        if kind == "started":
            row.trainable = (ev_get(ev, "trainable_params") or row.trainable)
            row.total = (ev_get(ev, "total_params") or row.total)
            row.method = row.method or (ev_get(ev, "method") or "")
            row.model = row.model or (ev_get(ev, "model") or "")
        elif kind == "step":
            row.steps = max(row.steps, int(ev_get(ev, "step") or 0))
            if ev_get(ev, "tokens_per_s"):
                tps.append(float(ev_get(ev, "tokens_per_s")))
            if ev_get(ev, "elapsed") is not None:
                row.train_time_s = float(ev_get(ev, "elapsed"))
        elif kind == "eval":
            loss = ev_get(ev, "eval_loss")
            trained = ev_get(ev, "step") != 0  # step 0 is the base model: the curve's start, never "best"
            if loss is not None:
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
        elif kind == "memory":
            peak = ev_get(ev, "peak_allocated_gb")
            if peak is not None:
                row.peak_memory_gb = max(row.peak_memory_gb or 0.0, float(peak))
        elif kind == "finished":
            if ev_get(ev, "runtime_s") is not None:
                row.train_time_s = float(ev_get(ev, "runtime_s"))
            row.steps = max(row.steps, int(ev_get(ev, "step") or 0))
    if tps:
        row.tokens_per_s = sum(tps) / len(tps)
    # time is the one fold's (every engine process's part, as Monitor, Runs and `loratui runs` show it); the
    # finished event's runtime_s counts only the last part of a stopped-and-resumed run
    from loratui.core.runs import summarize

    folded = summarize(run)
    if folded.elapsed is not None:
        row.train_time_s = folded.elapsed
    try:  # start to end of the engine process: loading, training, evaluating and saving
        status = run.read_status()
        if isinstance(status.get("started"), (int, float)) and isinstance(status.get("ended"), (int, float)):
            row.wall_s = float(status["ended"]) - float(status["started"])
    except Exception:  # noqa: BLE001 - a status file being rewritten: no wall time this once
        pass
    for what, folder in (("adapter", run.adapter_dir), ("model", run.path / "model")):
        if folder.is_dir():
            row.saved_as, row.size_bytes = what, folder_size(folder)
            if cfg is not None:
                row.targets = _targets(cfg, folder)
            break
    else:
        row.targets = _targets(cfg, None)
    return row


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
            if cached is None or cached[0] != key or cached[1].state in ("running", "starting", "created"):
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
            out.append((k, values))
    return out


# -- formatting ---------------------------------------------------------------------------------------------------

def fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def fmt_share(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 0.995:
        return "100%"
    return f"{100 * x:.3g}%"


def fmt_metric(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if name == "accuracy" else f"{v:.4f}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_bytes(n: int | None) -> str:
    """Three or four significant characters: 87.3 MiB, 858 KiB, 1.0 MiB (not 1001 KiB)."""
    if n is None:
        return "-"
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= 0.95 * div:
            v = n / div
            return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{n} B"


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return "-" if v is None else str(v)


def metric_title(rows: list[RunRow]) -> str:
    names = {r.metric_name for r in rows}
    return "accuracy" if names == {"accuracy"} else "eval loss"


#: (label, function of a row) for the comparison's rows, in order
FIELDS: list[tuple[str, Any]] = [
    ("state", lambda r: r.state),
    ("method", lambda r: r.method or "-"),
    ("rank r", lambda r: str(r.rank) if r.rank is not None else "-"),
    ("targets", lambda r: r.targets),
    ("trainable params", lambda r: fmt_count(r.trainable)),
    ("trainable share", lambda r: fmt_share(r.share)),
    ("final metric", lambda r: fmt_metric(r.metric_name, r.final_metric)),
    ("best metric", lambda r: fmt_metric(r.metric_name, r.best_metric)),
    ("best eval loss", lambda r: fmt_metric("eval_loss", r.best_eval_loss)),
    ("training time", lambda r: fmt_seconds(r.train_time_s)),
    ("wall time", lambda r: fmt_seconds(r.wall_s)),
    ("tokens/s", lambda r: f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "-"),
    ("peak GPU memory", lambda r: f"{r.peak_memory_gb:.2f} GiB" if r.peak_memory_gb else "-"),
    ("size on disk", lambda r: f"{fmt_bytes(r.size_bytes)} {r.saved_as}" if r.size_bytes is not None else "-"),
]


def table_rows(rows: list[RunRow]) -> list[tuple[str, list[str]]]:
    """(label, cell per run) for the side-by-side table, then the config keys that differ."""
    metric = metric_title(rows)
    out = []
    for label, fn in FIELDS:
        if label == "best eval loss" and metric == "eval loss":
            continue
        label = label.replace("metric", metric) if "metric" in label else label
        out.append((label, [fn(r) for r in rows]))
        if label == f"best {metric}" and any(r.f1 is not None for r in rows):
            out.append(("final F1", [fmt_metric("accuracy", r.f1) for r in rows]))
    for key, values in config_differences(rows):
        out.append((key, [fmt_value(v) for v in values]))
    return out


def column_title(r: RunRow) -> str:
    return r.label or r.name


# -- charts as text -----------------------------------------------------------------------------------------------

def chart_series(rows: list[RunRow]) -> list[tuple[str, str, list[float | None]]]:
    """(title, unit, value per run) for the bar charts: metric, time, trainable params, memory."""
    metric = metric_title(rows)
    return [
        (f"final {metric}", "", [r.final_metric for r in rows]),
        ("training time", "s", [r.train_time_s for r in rows]),
        ("trainable params", "", [float(r.trainable) if r.trainable is not None else None for r in rows]),
        ("peak GPU memory", "GiB", [r.peak_memory_gb for r in rows]),
    ]


def text_bars(labels: list[str], values: list[float | None], width: int = 40, unit: str = "",
              log: bool = False) -> str:
    """A horizontal bar chart in block characters (log scale for values spanning orders of magnitude)."""
    known = [v for v in values if v is not None]
    if not known:
        return "(no data)"
    lw = max(len(s) for s in labels)

    def scale(v: float) -> float:
        return math.log10(v + 1) if log else v

    top = max(scale(v) for v in known) or 1.0
    lines = []
    for label, v in zip(labels, values):
        if v is None:
            lines.append(f"{label:<{lw}} │ -")
            continue
        eighths = round(8 * width * max(0.0, scale(v)) / top)
        bar = "█" * (eighths // 8) + ("▏▎▍▌▋▊▉"[eighths % 8 - 1] if eighths % 8 else "")
        text = fmt_count(int(v)) if unit == "" and v >= 1000 else (f"{v:.4g}" + (f" {unit}" if unit else ""))
        lines.append(f"{label:<{lw}} │{bar} {text}")
    return "\n".join(lines)


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    blocks = "▁▂▃▄▅▆▇█"
    if hi == lo:
        return blocks[3] * len(values)
    return "".join(blocks[round(7 * (v - lo) / (hi - lo))] for v in values)


def needs_log(values: list[float | None]) -> bool:
    known = [v for v in values if v]
    return len(known) > 1 and max(known) / max(min(known), 1e-9) > 100


# -- export -------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ["run", "label", "study", "state", "model", "method", "rank", "alpha", "targets", "trainable_params",
               "total_params", "trainable_share", "metric", "final_metric", "best_metric", "final_eval_loss",
               "best_eval_loss", "f1", "train_time_s", "wall_s", "tokens_per_s", "peak_gpu_memory_gb", "size_bytes",
               "saved_as", "steps"]


def to_csv(rows: list[RunRow]) -> str:
    buf = io.StringIO()
    diffs = config_differences(rows)
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + [k for k, _ in diffs])
    for i, r in enumerate(rows):
        writer.writerow([r.name, r.label, r.study or "", r.state, r.model, r.method,
                         "" if r.rank is None else r.rank, "" if r.alpha is None else r.alpha, r.targets,
                         _blank(r.trainable), _blank(r.total), _blank(r.share), r.metric_name,
                         _blank(r.final_metric), _blank(r.best_metric), _blank(r.final_eval_loss),
                         _blank(r.best_eval_loss), _blank(r.f1), _blank(r.train_time_s), _blank(r.wall_s),
                         _blank(None if r.tokens_per_s is None else round(r.tokens_per_s, 1)),
                         _blank(r.peak_memory_gb), _blank(r.size_bytes), r.saved_as, r.steps]
                        + [fmt_value(values[i]) for _, values in diffs])
    return buf.getvalue()


def _blank(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: list[RunRow], title: str = "Comparison", charts: dict[str, str] | None = None) -> str:
    """The side-by-side table, the charts as text, and the eval-loss curves as sparklines."""
    labels = [column_title(r) for r in rows]
    out = [f"# {title}", ""]
    out.append("| | " + " | ".join(_md_cell(s) for s in labels) + " |")
    out.append("|---|" + "---|" * len(rows))
    if labels != [r.name for r in rows]:
        out.append("| run | " + " | ".join(f"`{_md_cell(r.name)}`" for r in rows) + " |")
    for label, cells in table_rows(rows):
        out.append(f"| {_md_cell(label)} | " + " | ".join(_md_cell(c) for c in cells) + " |")
    out.append("")
    for name, unit, values in chart_series(rows):
        log = needs_log(values)
        out += [f"## {name}" + (" (log scale)" if log else ""), "", "```",
                text_bars(labels, values, unit=unit, log=log), "```", ""]
    if any(r.eval_curve for r in rows):
        out += ["## eval loss by step", "", "```"]
        lw = max(len(s) for s in labels)
        for label, r in zip(labels, rows):
            if r.eval_curve:
                first, last = r.eval_curve[0], r.eval_curve[-1]
                out.append(f"{label:<{lw}} {sparkline([v for _, v in r.eval_curve])}  "
                           f"{first[1]:.4f} (step {first[0]}) -> {last[1]:.4f} (step {last[0]})")
        out += ["```", ""]
    for name, text in (charts or {}).items():
        out += [f"## {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(out)


def export(rows: list[RunRow], folder: str | Path, title: str = "Comparison",
           charts: dict[str, str] | None = None, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` into ``folder``; returns both paths."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    csv_path, md_path = folder / f"{stem}.csv", folder / f"{stem}.md"
    csv_path.write_text(to_csv(rows))
    md_path.write_text(to_markdown(rows, title, charts))
    return csv_path, md_path
