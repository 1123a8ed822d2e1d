"""What the Playground shows, as text: its title (model, device, memory), the classifier's probability bars, and
the batch's rows, summary and the example under the cursor. Pure functions of the generation process's events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.text import Text

from loratui.core.fmt import format_bytes, format_duration


@dataclass(frozen=True)
class NumberField:
    """One of the Playground's number boxes, as its label names it on screen."""
    label: str
    what: str  # what an empty box is asked to hold
    default: float
    whole: bool
    rule: str  # what ``ok`` checks, as the message says it
    ok: Callable[[float], bool]


#: the settings row's boxes by id; an empty box is not its default, as Setup's empty required fields are not
NUMBER_FIELDS = {
    "pg-max-new": NumberField("max tokens", "how many tokens an answer may have", 64, True, "at least 1",
                              lambda v: v >= 1),
    "pg-temperature": NumberField("temp", "the sampling temperature", 0.7, False, "at least 0", lambda v: v >= 0),
    "pg-top-p": NumberField("top-p", "the share of likely tokens sampled from", 0.9, False,
                            "more than 0 and at most 1", lambda v: 0 < v <= 1),
    "pg-batch-n": NumberField("N", "how many examples a batch runs", 20, True, "at least 1", lambda v: v >= 1),
}


def read_number(box_id: str, text: str) -> tuple[float | int | None, str | None]:
    """A number box's value, or None and one line naming the box: 'N is empty: how many examples a batch runs
    (the default is 20)', 'N must be at least 1, got '0' (the default is 20)', as Setup's fields say it."""
    spec = NUMBER_FIELDS[box_id]
    text = text.strip()
    default = f"(the default is {spec.default:g})"
    if not text:
        return None, f"{spec.label} is empty: {spec.what} {default}"
    try:
        value: float | int = int(text) if spec.whole else float(text)
    except ValueError:
        return None, f"{spec.label} must be a {'whole ' if spec.whole else ''}number, got '{text}' {default}"
    if not spec.ok(value):
        return None, f"{spec.label} must be {spec.rule}, got '{text}' {default}"
    return value, None


def memory_text(before: dict, after: dict) -> str:
    key = "cuda_allocated" if "cuda_allocated" in after else "rss"
    if key not in after:
        return ""
    b, a = before.get(key, 0), after[key]
    where = "GPU" if key == "cuda_allocated" else "RAM"
    return f"{where} {format_bytes(a)} (+{format_bytes(max(0, a - b))})"  # after loading, and what loading took


def title_text(info: dict, model_ref: str | None, width: int = 0) -> Text:
    """'Playground  runs/NAME · device dtype · memory' (the model's path while it loads). Within ``width`` cells
    (0: no limit) the path gives way, cut in its middle, so the device and the memory figure stay whole."""
    title = Text("Playground", style="bold")
    if info:
        name = Path(str(info.get("model"))).name
        parent = Path(str(info.get("model"))).parent.name
        where = f"{parent}/{name}" if parent else name
        tail = Text(f" · {info.get('device')} {info.get('dtype')}", style="dim")
        mem = memory_text(info.get("memory_before", {}), info.get("memory_after", {}))
        if mem:
            tail.append(f" · {mem}")
        room = width - title.cell_len - 2 - tail.cell_len if width else len(where)
        title.append(f"  {_middle(where, max(6, room))}")
        title.append_text(tail)
    elif model_ref:
        title.append(f"  {model_ref}", style="dim")
    return title


def _middle(text: str, width: int) -> str:
    """``text`` within ``width`` characters, cut in the middle (a run name's date and the folder stay)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def prob_bars(probs: list[tuple[str, float]], width: int = 16) -> Text:
    text = Text()
    lw = max((len(n) for n, _ in probs), default=0)
    for i, (name, p) in enumerate(probs):
        filled = round(p * width)
        text.append(f"{name:<{lw}} ", style="bold" if i == 0 else "")
        text.append("█" * filled, style="green" if i == 0 else "cyan")
        text.append("░" * (width - filled), style="dim")
        text.append(f" {p:6.1%}\n")
    return text


def _mark(ok: Any) -> Text:
    return Text("✔", style="green") if ok else Text("✖", style="red")


def batch_cells(it: dict, other: str = "base") -> tuple:
    """One row of the batch table: #, base (or GGUF) right?, adapter right?, prompt, expected, both answers
    (clipped)."""
    return (str(it["index"] + 1), _mark(it.get(f"{other}_ok")), _mark(it.get("adapter_ok")),
            _clip(it.get("prompt", ""), 28), _clip(it.get("reference", ""), 24),
            _clip(it.get(other, ""), 24), _clip(it.get("adapter", ""), 24))


def differs(it: dict, other: str = "base") -> bool:
    """An example worth a look: base and adapter differ in being right; a GGUF answers unlike the adapter."""
    if other == "gguf":
        return not it.get("gguf_same", True) or it.get("gguf_ok") != it.get("adapter_ok")
    return it.get(f"{other}_ok") != it.get("adapter_ok")


def batch_progress(items: list[dict], n: int, elapsed: float) -> str:
    """'batch 3/20 · adapter 3/3 right · base 1/3 right · ETA 1:10' while the batch runs (the file may hold fewer
    than ``n``: the end says how many)."""
    k = len(items)
    if not k:
        return f"batch 0/{n} · first example…"
    tally = [f"{side} {sum(1 for it in items if it.get(f'{side}_ok'))}/{k} right"
             for side in ("adapter", "base", "gguf") if any(side in it for it in items)]
    eta = f" · ETA {format_duration(elapsed / k * (n - k))}" if n > k else ""
    return " · ".join([f"batch {k}/{n}", *tally]) + eta


def held_out_choice(held: dict) -> str:
    """The batch dialog's line for a run's validation_fraction split: "the run's held-out 10%: 80 rows"."""
    rows = held.get("rows", 0)
    return f"the run's held-out {held.get('fraction', 0):.0%}: {rows:,} row{'s' if rows != 1 else ''}"


def batch_summary(items: list[dict], result: dict | None, other: str = "base") -> Text:
    """The scores once the batch is done (a GGUF's: how many answers it kept), then how many examples and where
    the two sides differ."""
    if not items and not result:
        return Text("no batch for this model yet: ctrl+b runs held-out examples through it", style="dim")
    differ = sum(1 for it in items if differs(it, other))
    summary = Text()
    if result:
        scores = result.get("scores", {})
        n = result.get("n", 0)
        cells = []
        for side in (other, "adapter"):
            s = scores.get(side)
            if not s:
                continue
            if result.get("task") == "seq-cls":
                cells.append(f"{side}: accuracy {s['accuracy']:.3f} ({s['correct']}/{n}), F1 {s['f1']:.3f}")
            else:
                same = f", same as adapter {s['same_as_adapter']}/{n}" if "same_as_adapter" in s else ""
                cells.append(f"{side}: exact {s['exact']}/{n}, valid JSON {s['valid_json']}/{n}{same}")
        summary.append("   ".join(cells) + "\n", style="bold")
    where = "the GGUF answers unlike the adapter" if other == "gguf" else "only one of base and adapter is right"
    summary.append(f"{len(items)} examples · {differ} where {where} (shown first)", style="dim")
    return summary


def batch_detail(it: dict, other: str = "base") -> Text:
    """One example in full: what was asked, what was expected, both answers (green right, red wrong)."""
    text = Text()
    for label, value, ok in (("prompt", it.get("prompt", ""), None), ("expected", it.get("reference", ""), None),
                             (other, it.get(other, ""), it.get(f"{other}_ok")),
                             ("adapter", it.get("adapter", ""), it.get("adapter_ok"))):
        if label == other and other not in it:
            continue
        style = "" if ok is None else ("green" if ok else "red")
        text.append(f"{label:<9}", style="dim")
        text.append(" ".join(str(value).split()) + "\n", style=style)
    text.rstrip()
    return text


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
