"""What the Monitor says about a run, as text: its title line, the step line, the figures line and the banner
(finished, stopped, failed, crashed, stalled). Pure functions of the fold's :class:`RunView` and the run's state,
so every figure is the one fold's, written by the one formatter (:mod:`loratui.core.fmt`)."""

from __future__ import annotations


from rich.text import Text

from loratui.core.fmt import format_count, format_duration, format_loss, format_lr, format_rate
from loratui.core.preference import REWARD_KEYS
from loratui.core.protocol import state_style
from loratui.ui.widgets.run_state import RunView


def title_text(v: RunView, state: str, fallback_name: str = "") -> Text:
    """The run's name, its state badge, then model · method · ranks · precision · trainable parameters."""
    name = v.name or fallback_name
    title = Text.assemble((name, "bold"), " ", (f" {state or 'loading'} ", _badge(state)))
    desc = " · ".join(x for x in (_short_model(v.model), v.method, _world(v), v.precision) if x)
    if v.trainable_params:
        share = f" ({100 * v.trainable_params / v.total_params:.2f}%)" if v.total_params else " trainable"
        desc += f" · {format_count(v.trainable_params)}{share}"
    if desc:
        title.append("  " + desc, style="dim")
    return title


def steps_text(v: RunView, state: str) -> str:
    steps = f"step {v.step}/{v.max_steps}" if v.max_steps else f"step {v.step}"
    if v.epoch is not None:
        steps += f" · epoch {v.epoch:.2f}" + (f"/{v.epochs:g}" if v.epochs else "")
    if v.phase and state in ("running", "starting") and v.phase != "training":
        steps += f" · {v.phase}…"
    return steps


def stats_text(v: RunView, state: str) -> Text:
    stats = Text()
    _stat(stats, "loss", _num(v.loss))
    if v.eval_loss is not None:
        value = _num(v.eval_loss)
        if v.best_eval_loss is not None and v.best_eval_loss < v.eval_loss:
            value += f" (best {_num(v.best_eval_loss)}@{v.best_eval_step})"
        _stat(stats, "eval", value)
    if v.best_accuracy is not None:
        _stat(stats, "acc", f"{v.best_accuracy:.3f}")
    for label, value in preference_figures(v):
        _stat(stats, label, value)
    _stat(stats, "lr", format_lr(v.lr))
    _stat(stats, "tok/s", format_rate(v.tokens_per_s))  # the run's throughput, as Compare shows it
    _stat(stats, "time", format_duration(v.elapsed))
    if state in ("running", "starting") and not v.phase.startswith("final eval"):
        _stat(stats, "ETA", format_duration(v.eta))  # the final evaluation says itself what it is doing
    return stats


def preference_figures(v: RunView) -> list[tuple[str, str]]:
    """A preference run's rewards beside the loss: the held-out pairs' (the newest evaluation) once there is one,
    else the newest training step's. Empty for other runs."""
    held_out = {k: v.eval_metrics[k] for k in REWARD_KEYS if isinstance(v.eval_metrics.get(k), (int, float))}
    src = held_out or v.rewards
    out = []
    if "rewards/chosen" in src and "rewards/rejected" in src:
        out.append(("rewards", f"{src['rewards/chosen']:+.3f}/{src['rewards/rejected']:+.3f}"))
    if "rewards/margins" in src:
        out.append(("margin", f"{src['rewards/margins']:+.3f}"))
    if "rewards/accuracies" in src:
        out.append(("pref acc", f"{src['rewards/accuracies']:.2f}" + (" held-out" if held_out else "")))
    return out


def banner_text(v: RunView, state: str, pid: int | None, oom: bool) -> tuple[Text | str, str]:
    """The banner under the figures and its kind (error | ok | warn; "" hides it). The run's alerts (a loss spike,
    a plateau, a skipped update, a roll-back, early stopping) add a line with how many and the newest."""
    text, kind = _state_banner(v, state, pid, oom)
    alerts = v.alerts or []
    if not alerts or state == "failed":
        return text, kind
    last = alerts[-1]
    line = Text.assemble(("⚠ ", "bold yellow"), (f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}", "bold"),
                         " · ", str(last.get("message") or last.get("alert") or ""))
    if not text:
        return line, "warn"
    text = Text(text) if isinstance(text, str) else text
    text.append("\n")
    text.append_text(line)
    return text, kind


def _state_banner(v: RunView, state: str, pid: int | None, oom: bool) -> tuple[Text | str, str]:
    if state == "failed":
        f = v.failure or {}
        text = Text.assemble(("✖ failed", "bold red"), "  ",
                             (f"{f.get('error')}: " if f.get("error") else "", "bold"), f.get("message") or "")
        if f.get("hint"):
            text.append("\n→ ", style="bold")
            text.append(str(f["hint"]), style="bold")
        if f.get("field"):
            text.append(f"  (field {f['field']})", style="dim")
        if oom:
            text.append("\n")
            text.append("b", style="bold reverse")
            text.append(" retries with half the micro-batch and twice the grad accumulation, from the last "
                        "checkpoint")
        return text, "error"
    if state == "crashed":
        who = f" (pid {pid})" if pid else ""
        text = Text.assemble(("✖ crashed", "bold red"), f"  the engine process{who} ended without a final event")
        text.append("\n→ read the log below; resume from the newest checkpoint in Runs (u)", style="bold")
        return text, "error"
    if state == "finished":
        text = Text.assemble(("✔ finished", "bold green"), f" in {format_duration(v.elapsed)}")
        if v.train_loss is not None:
            text.append(f" · mean train loss {_num(v.train_loss)}")
        final = v.final_eval
        if final.get("accuracy") is not None:
            text.append(f" · accuracy {final['accuracy']:.3f}")
        elif final.get("eval_loss") is not None:
            text.append(f" · eval {_num(final['eval_loss'])}")
        if v.adapter:
            text.append(" · adapter saved (")  # the journeys read these words; 'o' opens it, short for 80 cols
            text.append("o", style="bold reverse")
            text.append(")")
        return text, "ok"
    if state == "stopped":
        text = Text.assemble(("■ stopped", "bold yellow"), f" at step {v.step}")
        if v.adapter:
            text.append(" · adapter saved")
        text.append(" · resume it from Runs (u)", style="dim")
        return text, "warn"
    if state == "stalled":
        text = Text.assemble(("⏸ stalled", "bold yellow"), f" at step {v.step}: no progress for "
                             f"{format_duration(v.stalled_for)}")
        text.append(" · its engine lives but says nothing (a hung collective, a stuck loader, a frozen disk)",
                    style="dim")
        return text, "warn"
    return "", ""


def side_title(v: RunView) -> str:
    world = _world(v)
    return f"GPU · {world}" if world else "GPU"


def _badge(state: str) -> str:
    return f"{state_style(state)} reverse"


def _world(v: RunView) -> str:
    """'DDP x 2 · batch 64' for a run on several processes (the started event's strategy and effective batch)."""
    if v.world_size <= 1:
        return ""
    text = f"{(v.distributed or 'ranks').upper()} x {v.world_size}"
    return text + (f" · batch {v.effective_batch}" if v.effective_batch else "")


def _short_model(model: str) -> str:
    return model.rstrip("/").split("/")[-1] if model else ""


def _num(x: float | None) -> str:
    return format_loss(x)


def _stat(text: Text, label: str, value: str) -> None:
    if text:
        text.append("  ")
    text.append(f"{label} ", style="dim")
    text.append(value, style="bold")
