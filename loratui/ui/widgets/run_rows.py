"""The Runs screen's rows and detail, as text: one row per run (its name, state, method, model, progress, best
evaluation, start) and the lines under the table for the run under the cursor (where it is, how far, and what
its state means)."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from loratui.core.compare import summary_path
from loratui.core.fmt import format_duration, logged_at
from loratui.core.fold import RunSummary
from loratui.core.protocol import state_style

#: (key, label, most width); the name column takes what the others leave
COLUMNS = (("name", "Name", 14), ("state", "State", 8), ("method", "Method", 9), ("model", "Model", 22),
           ("progress", "Progress", 9), ("eval", "Best", 9), ("started", "Started", 11))
#: left out while the names would be cut (a default name begins with its model; the detail then names it)
OPTIONAL = ("model",)


def progress_cell(s: RunSummary, width: int = 4) -> Text:
    if not s.max_steps:
        return Text(f"{s.step}" if s.step else "-", style="dim")
    frac = min(1.0, s.progress)
    filled = round(frac * width)
    style = state_style(s.state)
    return Text.assemble(("█" * filled, style or "green"), ("░" * (width - filled), "dim"), f" {frac * 100:3.0f}%")


def row_cells(s: RunSummary) -> tuple:
    model = s.model.rstrip("/").split("/")[-1] if s.model else "-"
    model = model.removesuffix("-Instruct").removesuffix("-instruct")
    # the task's metric, as loratui runs prints it: accuracy for a classifier, else the eval loss
    best = f"acc {s.best_accuracy:.3f}" if s.best_accuracy is not None else \
        f"{s.best_eval_loss:.3f}" if s.best_eval_loss is not None else "-"
    name = Text(s.name, style="bold")
    if s.problem:
        name.append(" !", style="bold magenta")
    return (
        name,
        Text(str(s.state), style=state_style(s.state)),
        s.method_text,
        model,
        progress_cell(s),
        best,
        datetime.fromtimestamp(s.started).strftime("%m-%d %H:%M") if s.started else "-",
    )


def detail_text(s: RunSummary, model: bool = False) -> Text:
    """The lines under the table: the run's folder and figures (its ``model`` too, while the table leaves that
    column out), then what its state means."""
    text = Text.assemble((str(summary_path(s)), "dim"))
    if model and s.model:
        text.append(f"  {s.model.rstrip('/').split('/')[-1]}")
    if s.max_steps:
        text.append(f"  step {s.step}/{s.max_steps}")
    if s.last_loss is not None:  # logged at an earlier step: which, as the Monitor says it ('loss 0.1166@8')
        text.append(f"  loss {s.last_loss:.4f}{logged_at(s.loss_step, s.step)}")
    if s.elapsed is not None:
        text.append(f"  time {format_duration(s.elapsed)}")
    if s.state.active and s.eta is not None:
        text.append(f"  ETA {format_duration(s.eta)}")
    if s.problem:
        text.append("\n! " + s.problem, style="magenta")
    if s.state == "unreadable":
        pass
    elif s.state == "failed" and s.error:
        text.append("\n✖ " + s.error, style="red")
    elif s.state == "stalled":
        text.append(f"\n⏸ no progress for {format_duration(s.stalled_for)}: its engine lives but says nothing "
                    "(a hung collective, a stuck data loader, a frozen filesystem); x asks it to stop",
                    style="yellow")
    elif s.state == "crashed":
        text.append("\n✖ the engine ended without a final event; u resumes it (the dialog says from where)",
                    style="red")
    elif s.state == "stopped":
        text.append("\nstopped by request; u resumes it", style="dim")
    return text


def why_not_resume(s: RunSummary) -> str:
    """One line for ``u`` on a run that can't be resumed: why, and what to do instead."""
    name, state = s.name, s.state
    if state.active:
        return f"{name} is {state}: nothing to resume (enter watches it in the Monitor)."
    if state == "finished":
        return f"{name} finished: nothing to resume (c copies its config to Setup for a new run)."
    if state == "failed":
        return f"{name} failed: not resumable (enter shows why; c copies its config to Setup to fix it)."
    if state == "unreadable":
        return f"{name}'s status.json can't be read ({s.problem or 'see its folder'}): not resumed."
    return f"{name} has not started: nothing to resume (a queued run waits its turn in the Queue, w)."


def why_not_stop(s: RunSummary) -> str:
    """One line for ``x`` on a run whose engine is not working: why, and what to do instead."""
    name, state = s.name, s.state
    if state in ("stopped", "crashed"):
        return f"{name} is {state}: nothing to stop (u resumes it)."
    if state == "finished":
        return f"{name} already finished: nothing to stop (its adapter is in Adapters, a)."
    if state == "failed":
        return f"{name} failed: nothing to stop (enter shows why in the Monitor)."
    if state == "unreadable":
        return f"{name}'s status.json can't be read: no engine proven to be its own, nothing to stop."
    return f"{name} has not started: nothing to stop (a queued run is cancelled in the Queue: w, then x)."
