"""Runs side by side: what each trained, what it scored, what it cost; exported as CSV and Markdown.

Everything comes from the run folders (config.yaml, events.jsonl, status.json, the saved adapter or model), so a
comparison works for runs from any session, finished or not. Light module: no torch, no Textual, no plotext (the
Markdown's charts are drawn here with block characters; the Compare screen draws its own with plotext). The rows
themselves are read in :mod:`loratui.core.compare_rows`.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any


from loratui.core.fmt import format_duration, format_rate
from loratui.core.preference import REWARD_KEYS
from loratui.core.compare_rows import (  # noqa: F401 - re-exported: the rows are read there
    IGNORED_KEYS, RowCache, RunRow, config_differences, ev_get, flatten, read_run, read_runs, state_text,
    summary_path,
)


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
    return f"{100 * x:#.3g}%".replace(".%", "%")  # three figures each, trailing zeros kept: 0.650% beside 0.167%


def fmt_metric(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if name == "accuracy" else f"{v:.4f}"


#: durations as every view writes them (the one formatter; the name other modules used)
fmt_seconds = format_duration


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


def fmt_final(r: RunRow) -> str:
    """A finished run's final metric; a run not finished has only its latest evaluation: 'so far'."""
    text = fmt_metric(r.metric_name, r.final_metric)
    if r.final_metric is not None and r.metric_name == "eval_loss" and r.objective not in ("", "sft"):
        text += f" {r.objective}"  # a preference loss: not the same quantity as an SFT run's loss beside it
    return text if r.final_metric is None or r.state == "finished" else f"{text} so far"


def final_title(rows: list[RunRow], metric: str) -> str:
    """'final eval loss', or what the values are when some runs are not finished."""
    if all(r.state == "finished" or r.final_metric is None for r in rows):
        return f"final {metric}"
    return f"{metric}: final, or so far"


def metric_title(rows: list[RunRow]) -> str:
    names = {r.metric_name for r in rows}
    return "accuracy" if names == {"accuracy"} else "eval loss"


#: (label, function of a row) for the comparison's rows, in order
FIELDS: list[tuple[str, Any]] = [
    ("state", lambda r: r.state),
    ("method", lambda r: (r.method if r.objective in ("", "sft") else f"{r.method}·{r.objective}") if r.method
     else "-"),  # as Runs and `loratui runs` show it: 'lora·dpo' for a preference run
    ("rank r", lambda r: str(r.rank) if r.rank is not None else "-"),
    ("targets", lambda r: r.targets),
    ("trainable params", lambda r: fmt_count(r.trainable)),
    ("trainable share", lambda r: fmt_share(r.share)),
    ("final metric", lambda r: fmt_final(r)),
    ("best metric", lambda r: fmt_metric(r.metric_name, r.best_metric)),
    ("best eval loss", lambda r: fmt_metric("eval_loss", r.best_eval_loss)),
    ("active time", lambda r: format_duration(r.train_time_s)),  # the 'time' of Monitor, Runs and the Queue
    ("wall time", lambda r: format_duration(r.wall_s)),  # first start to last end, pauses included
    ("tokens/s", lambda r: format_rate(r.tokens_per_s)),
    ("peak GPU memory", lambda r: f"{r.peak_memory_gb:.2f} GiB" if r.peak_memory_gb else
     f"- (CPU run: host {r.host_peak_gb:.2f} GiB)" if r.device == "cpu" and r.host_peak_gb else
     "- (CPU run)" if r.device == "cpu" else "-"),
    ("size on disk", lambda r: f"{fmt_bytes(r.size_bytes)} {r.saved_as}" if r.size_bytes is not None else "-"),
]


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


#: a preference run's rows (issue 20), shown when some compared run has rewards; other runs show '-'. Final: the
#: last evaluation's on held-out pairs (else the last step's: 'rewards of' says which); best: the held-out ones'
REWARD_FIELDS: list[tuple[str, Any]] = [
    ("rewards of", lambda r: {"held-out": "held-out pairs", "train": "train steps"}.get(r.rewards_from, "-")),
    ("chosen/rejected", lambda r: f"{r.rewards['rewards/chosen']:+.3f}/{r.rewards['rewards/rejected']:+.3f}"
     if {"rewards/chosen", "rewards/rejected"} <= set(r.rewards) else "-"),
    ("final margin", lambda r: _signed(r.rewards.get("rewards/margins"))),
    ("best margin", lambda r: _signed(r.best_margin)),
    ("final pref acc", lambda r: _share(r.rewards.get("rewards/accuracies"))),
    ("best pref acc", lambda r: _share(r.best_pref_acc)),
]


def reward_rows(rows: list[RunRow]) -> list[tuple[str, list[str]]]:
    """The reward rows, or none when no compared run is a preference run with rewards."""
    if not any(r.rewards for r in rows):
        return []
    return [(label, [fn(r) for r in rows]) for label, fn in REWARD_FIELDS]


def table_rows(rows: list[RunRow]) -> list[tuple[str, list[str]]]:
    """(label, cell per run) for the side-by-side table (a preference run's rewards after the scores), then the
    config keys that differ."""
    metric = metric_title(rows)
    out = []
    for label, fn in FIELDS:
        if label == "best eval loss" and metric == "eval loss":
            continue
        label = label.replace("metric", metric) if "metric" in label else label
        out.append((label, [fn(r) for r in rows]))
        if label == f"best {metric}" and any(r.f1 is not None for r in rows):
            out.append(("final F1", [fmt_metric("accuracy", r.f1) for r in rows]))
        if label == f"best {metric}":
            out += reward_rows(rows)
    for key, values in config_differences(rows):
        out.append((key, [fmt_value(v) for v in values]))
    return out


def column_title(r: RunRow) -> str:
    return r.label or r.name


SEPARATORS = "-_./ "


def distinct_names(names: list[str]) -> tuple[list[str], str]:
    """The part of each name that tells it from the others, and the head they all share: the common head and tail
    are cut at a separator ('smollm2-135m-instruct-lora-20261204-0912' and '...-0931' become '0912' and '0931',
    sharing 'smollm2-135m-instruct-lora-20261204-'). Names left empty (equal names) stay whole."""
    if len(names) < 2 or len(set(names)) < 2:
        return list(names), ""
    head = 0
    first = names[0]
    for i in range(min(len(n) for n in names)):
        if any(n[i] != first[i] for n in names):
            break
        if first[i] in SEPARATORS:
            head = i + 1
    tail = 0
    for i in range(1, min(len(n) for n in names) - head + 1):
        if any(n[-i] != first[-i] for n in names):
            break
        if first[-i] in SEPARATORS:
            tail = i
    parts = [n[head:len(n) - tail] for n in names]
    if any(not p for p in parts):
        return list(names), ""
    return parts, first[:head]


def short_titles(rows: list[RunRow]) -> tuple[list[str], str]:
    """Column titles where width is short (the Compare screen): a study's labels, else the part of the run names
    that differs; and the names' common head (said once, in the screen's title)."""
    if rows and all(r.label for r in rows):
        return [r.label for r in rows], ""
    parts, head = distinct_names([r.name for r in rows])
    return [r.label or p for r, p in zip(rows, parts)], head


# -- charts as text -----------------------------------------------------------------------------------------------

def no_data_text(rows: list[RunRow], title: str) -> str:
    """What an empty chart says: CPU runs have no GPU memory to show (not 'no data yet')."""
    if "GPU memory" in title and rows and all(r.device == "cpu" for r in rows):
        hosts = [r.host_peak_gb for r in rows if r.host_peak_gb]
        if hosts:
            return "no GPU memory: these runs trained on the CPU (their host memory is in the table)"
        return "no GPU memory: these runs trained on the CPU (their host memory is not recorded)"
    return f"no data yet for {title}"


def chart_series(rows: list[RunRow]) -> list[tuple[str, str, list[float | None], list[str]]]:
    """(title, unit, value per run, text per run) for the bar charts: metric, time, trainable params, memory. The
    texts are the table's cells ('1.4617 so far', '1:33', '461k', '3.21 GiB'; '-' where a run has no value), so a
    bar reads as its column does."""
    metric = metric_title(rows)
    # a classifier's accuracy beside loss runs is no bar on the loss's scale: its figure is written, not drawn
    other = [r.metric_name != ("accuracy" if metric == "accuracy" else "eval_loss") and r.final_metric is not None
             for r in rows]
    return [
        (final_title(rows, metric), "", [None if o else r.final_metric for r, o in zip(rows, other)],
         [f"{r.metric_name.replace('_', ' ')} {fmt_final(r)} (not a loss)" if o else fmt_final(r)
          for r, o in zip(rows, other)]),
        ("active time", "", [r.train_time_s for r in rows], [format_duration(r.train_time_s) for r in rows]),
        ("trainable params", "", [float(r.trainable) if r.trainable is not None else None for r in rows],
         [fmt_count(r.trainable) for r in rows]),
        ("peak GPU memory", "GiB", [r.peak_memory_gb for r in rows],
         [f"{r.peak_memory_gb:.2f} GiB" if r.peak_memory_gb else "-" for r in rows]),
    ]


def bar_scale(v: float, log: bool = False) -> float:
    """Where a bar ends before it is scaled to the chart's width: the value, or log10(v + 1) on a log scale."""
    return math.log10(max(v, 0.0) + 1) if log else max(v, 0.0)


def bar_blocks(v: float, top: float, width: int, log: bool = False) -> str:
    """A bar of ``width`` cells at ``top`` (on the same scale as :func:`bar_scale`), in eighths of a cell."""
    eighths = round(8 * width * bar_scale(v, log) / (top or 1.0))
    eighths = max(0, min(eighths, 8 * width))
    return "█" * (eighths // 8) + ("▏▎▍▌▋▊▉"[eighths % 8 - 1] if eighths % 8 else "")


def text_bars(labels: list[str], values: list[float | None], width: int = 40, unit: str = "",
              log: bool = False, texts: list[str] | None = None) -> str:
    """A horizontal bar chart in block characters (log scale for values spanning orders of magnitude), each bar
    followed by its value (``texts``: as the table writes them)."""
    known = [v for v in values if v is not None]
    if not known:
        return "(no data)"
    lw = max(len(s) for s in labels)
    top = max(bar_scale(v, log) for v in known) or 1.0
    lines = []
    for i, (label, v) in enumerate(zip(labels, values)):
        if v is None:  # no value, or one the chart does not draw (its text says why)
            lines.append(f"{label:<{lw}} │ {texts[i] if texts is not None else '-'}")
            continue
        text = texts[i] if texts is not None else (
            format_duration(v) if unit == "s" else fmt_count(int(v)) if unit == "" and v >= 1000
            else f"{v:.4g}" + (f" {unit}" if unit else ""))
        lines.append(f"{label:<{lw}} │{bar_blocks(v, top, width, log)} {text}")
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
               "saved_as", "steps", "objective", "reward_chosen", "reward_rejected", "margin", "pref_accuracy",
               "best_margin", "best_pref_accuracy", "rewards_from"]


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
                         _blank(r.peak_memory_gb), _blank(r.size_bytes), r.saved_as, r.steps, r.objective]
                        + [_blank(r.rewards.get(k)) for k in REWARD_KEYS]
                        + [_blank(r.best_margin), _blank(r.best_pref_acc), r.rewards_from]
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
    for name, unit, values, texts in chart_series(rows):
        log = needs_log(values)
        out += [f"## {name}" + (" (log scale)" if log else ""), "", "```",
                text_bars(labels, values, unit=unit, log=log, texts=texts), "```", ""]
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


#: how many of the newest runs Compare shows when nothing is chosen and the folder holds no study
DEFAULT_RUNS = 6
#: a run's states before its end (queued, starting, training, stopping or stalled): its figures are the latest so far
NOT_DONE = ("waiting", "starting", "running", "stopping", "stalled")


def default_selection(runs_dir: Path) -> tuple[list[Path], str, str | None]:
    """(run folders, heading, study) Compare shows when nothing is chosen: the newest study's newest batch, else the
    newest DEFAULT_RUNS runs, oldest first. The app's Compare and ``loratui compare`` both start here."""
    from loratui.core.runs import list_runs
    from loratui.core.study import list_studies, study_runs

    studies = list_studies(runs_dir)
    if studies:
        study = studies[0][0]
        return study_runs(runs_dir, study), f"study {study}", study
    return [summary_path(s) for s in list_runs(runs_dir)[:DEFAULT_RUNS]][::-1], "newest runs", None
