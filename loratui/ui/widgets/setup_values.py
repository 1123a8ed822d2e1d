"""What the Setup form shows for a config: its values by section, which fields show for which choices, the
section titles, and the key under which a model's layer names are cached. No widgets: pure functions."""

from __future__ import annotations

from typing import Any

from loratui.core.config import LORA_METHODS, RunConfig
from loratui.core.config_draft import ConfigDraft
from loratui.core.fmt import printable
from loratui.core.presets import PRESETS, preset_modules
from loratui.ui.widgets.form import DATA_COLUMNS, KTO_COLUMNS, SECTION_MODELS, SECTION_TITLES, SPECS, SPECS_BY_PATH


def config_values(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Section -> field -> value, with a preset's modules written out so the targets field shows them."""
    values = {s: getattr(cfg, s).model_dump() for s in SECTION_MODELS}
    lora = values["lora"]
    if lora["preset"] in PRESETS and not lora["target_modules"]:
        lora["target_modules"] = preset_modules(lora["preset"])
    return values


#: the sections in the first frame (they fill 80x24); the others are mounted right after it
FIRST_SECTIONS = ("model",)


def shown_fields(values: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Fields that show only for some values of others: path -> shown."""
    kind = values["method"]["kind"]
    task = values["model"]["task"]
    objective = values["method"]["objective"]
    shown: dict[str, bool] = {
        "model.num_labels": task == "seq-cls",
        "method.quant_type": kind == "qlora",
        "method.double_quant": kind == "qlora",
        "method.compute_dtype": kind in ("qlora", "lora-8bit"),
        # a preference objective's knobs only where they apply; start_from continues an adapter (LoRA methods)
        "method.beta": objective != "sft",
        "method.loss_type": objective == "dpo",
        "method.label_smoothing": objective == "dpo",
        "method.desirable_weight": objective == "kto",
        "method.undesirable_weight": objective == "kto",
        "method.start_from": kind in LORA_METHODS,
    }
    uses_lora = kind in LORA_METHODS
    fmt = values["data"]["format"]
    cols = DATA_COLUMNS.get(fmt, ()) + (KTO_COLUMNS if fmt == "preference" and objective == "kto" else ())
    for spec in SPECS:
        if spec.section == "lora":
            shown[spec.path] = uses_lora
        if spec.section == "data" and spec.key.endswith("_column"):
            shown[spec.path] = spec.key in cols
    return shown


def section_title(section: str, values: dict[str, dict[str, Any]]) -> str:
    kind = values["method"]["kind"]
    if section == "lora" and kind not in LORA_METHODS:
        return f"LoRA (not used by {kind})"
    if section == "lora" and values["method"].get("start_from"):
        return "LoRA (not used: the adapter's own)"
    return SECTION_TITLES[section]


def model_key(values: dict[str, dict[str, Any]]) -> str:
    m = values["model"]
    return f"{m['name']}|{m['task']}|{m['trust_remote_code']}"


def unused_notes(values: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Which of two fields is in force: Max steps over Epochs, a validation file over the fraction. Path -> the
    note under the field that is not ('' when it is)."""
    train, data = values["train"], values["data"]
    return {
        "train.epochs": "not used: Max steps is set" if train.get("max_steps") else "",
        "data.validation_fraction": "not used: Validation file set" if data.get("validation_file") else "",
    }


def draft_marks(draft: ConfigDraft | None) -> tuple[dict[str, str], dict[str, str]]:
    """Where a config file's mistakes show in the form: path -> the file's text in a text field (the field's own
    check marks it, and the run cannot launch until it is fixed), and path -> a note under a choice or a switch the
    file gave a value it cannot hold (it shows the default until the user picks)."""
    text: dict[str, str] = {}
    notes: dict[str, str] = {}
    for path, value in (draft.bad if draft else {}).items():
        spec = SPECS_BY_PATH.get(path)
        if spec is None:
            continue
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        shown = printable(shown, 200)
        if spec.kind in ("select", "bool"):
            default = getattr(RunConfig(), spec.section).model_dump()[spec.key]
            notes[path] = f"the file's {shown!r} is not allowed here: {default} until you choose"
        else:
            text[path] = shown
    return text, notes


def draft_summary(draft: ConfigDraft) -> str:
    """The notification on opening a config with mistakes: the values to fix (marked in their fields, counted in
    the form's line), the choices shown at their default, then what could not go in the form (keys that are no
    setting, with the name to use)."""
    text, notes = draft_marks(draft)
    left = [printable(draft.messages[p], 240) for p in [*draft.unknown, *(p for p in draft.bad if p not in SPECS_BY_PATH)]]
    parts = []
    if text:
        parts.append(f"{len(text)} value{'s' if len(text) != 1 else ''} to fix, marked in the form: " + ", ".join(text))
    if notes:
        parts.append("shown at the default until you choose: " + ", ".join(
            f"{p} (the file's {printable(draft.bad[p], 40)!r})" for p in notes))
    if left:
        parts.append("left out: " + "; ".join(left))
    return "this config has mistakes; " + ". ".join(parts) + ". Fix and save it with ctrl+s."
