"""What the Monitor says about a run, as text: its title line, the step line, the figures line and the banner
(finished, stopped, failed, crashed, stalled). Pure functions of the fold's :class:`RunView` and the run's state,
so every figure is the one fold's, written by the one formatter (:mod:`loratui.core.fmt`)."""

from __future__ import annotations


from rich.cells import cell_len
from rich.text import Text

from loratui.core.fmt import format_count, format_duration, format_loss, format_lr, format_rate, logged_at
from loratui.core.preference import REWARD_KEYS
from loratui.core.protocol import state_style
from loratui.ui.widgets.run_state import RunView


def title_text(v: RunView, state: str, fallback_name: str = "", width: int | None = None) -> Text:
    """The run's name, its state badge, then model · method · ranks · precision · trainable parameters; in
    ``width`` cells the least telling of those give way first (the share, the precision, the model)."""
    name = v.name or fallback_name
    title = Text.assemble((name, "bold"), " ", (f" {state or 'loading'} ", _badge(state)))
    trainable = ""
    if v.trainable_params:
        share = f" ({100 * v.trainable_params / v.total_params:.2f}%)" if v.total_params else " trainable"
        trainable = f"{format_count(v.trainable_params)}{share}"
    method = v.method_text if v.method else ""  # 'lora·dpo' for a preference run, as Runs and Compare say it
    parts = [(2, [_short_model(v.model)]), (0, [method]), (1, [_world(v)]), (3, [v.precision]),
             (4, [trainable, format_count(v.trainable_params) if v.trainable_params else ""])]
    room = None if width is None else width - title.cell_len - 2
    desc = " · ".join(fit_parts([(rank, [f for f in forms if f]) for rank, forms in parts], room, " · "))
    if desc:
        title.append("  " + desc, style="dim")
    return title


def steps_text(v: RunView, state: str, width: int | None = None) -> str:
    """'step 120/200 · epoch 0.53/1 · final eval: 800 examples…'; in ``width`` cells the epoch gives way first,
    then the phase says only what it is ('final eval…')."""
    steps = f"step {v.step}/{v.max_steps}" if v.max_steps else f"step {v.step}"
    epoch = phase = []
    if v.epoch is not None:
        epoch = ["epoch " + f"{v.epoch:.2f}" + (f"/{v.epochs:g}" if v.epochs else "")]
    if v.phase and state in ("running", "starting", "stopping") and v.phase != "training":
        phase = [f"{v.phase}…", f"{v.phase.split(':')[0]}…"]
    return " · ".join(fit_parts([(0, [steps]), (2, epoch), (1, phase)], width, " · "))


def stats_text(v: RunView, state: str, width: int | None = None) -> Text:
    """The figures: loss, eval, accuracy, a preference run's rewards, margin and accuracy, lr, tokens/s, time, ETA;
    in ``width`` cells the throughput, the lr and the rewards give way first, the loss and eval last."""
    loss = _stat("loss", _num(v.loss))
    at = logged_at(v.loss_step, v.step) if v.loss is not None else ""  # logged steps ago: say when, where it fits
    parts: list[tuple[int, list[Text]]] = [(0, [_stat("loss", _num(v.loss) + at), loss] if at else [loss])]
    if v.eval_loss is not None:
        value = _num(v.eval_loss)
        forms = [_stat("eval", value)]
        if v.best_eval_loss is not None and v.best_eval_loss < v.eval_loss:
            forms.insert(0, _stat("eval", value + f" (best {_num(v.best_eval_loss)}@{v.best_eval_step})"))
        parts.append((1, forms))
    if v.best_accuracy is not None:
        parts.append((2, [_stat("acc", f"{v.best_accuracy:.3f}")]))
    for label, value in preference_figures(v):  # the preference accuracy and the margin before the rewards
        parts.append(({"pref acc": 2, "margin": 3}.get(label, 4), [_stat(label, value)]))
    parts.append((5, [_stat("lr", format_lr(v.lr))]))
    # the run's throughput, as Compare shows it (the log's lines give each interval's): "avg" where it fits
    parts.append((6, [_stat("avg tok/s", format_rate(v.tokens_per_s)), _stat("tok/s", format_rate(v.tokens_per_s))]))
    parts.append((3, [_stat("time", format_duration(v.elapsed))]))
    if state in ("running", "starting") and not v.phase.startswith("final eval"):
        parts.append((1, [_stat("ETA", format_duration(v.eta))]))  # the final evaluation says itself what it does
    return Text("  ").join(fit_parts(parts, width, "  "))


def fit_parts(parts: list[tuple[int, list]], width: int | None, sep: str) -> list:
    """The parts of a line that fit ``width`` cells, in their order: each is (rank, its forms, longest first),
    and the lower ranks are placed first, each in the longest form that still fits (all of them, in their first
    form, where ``width`` is None; the first part always)."""
    chosen: dict[int, object] = {}
    used = 0
    for i in sorted(range(len(parts)), key=lambda i: parts[i][0]):
        for form in parts[i][1]:
            extra = cell_len(str(form)) + (len(sep) if chosen else 0)
            if width is None or used + extra <= width or not chosen:
                chosen[i], used = form, used + extra
                break
    return [chosen[i] for i in sorted(chosen)]


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
        text.append("\n→ read the log below; Runs (u) resumes it: from its newest checkpoint, else step 0",
                    style="bold")
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


def _stat(label: str, value: str) -> Text:
    return Text.assemble((f"{label} ", "dim"), (value, "bold"))
