"""The Setup form's fields as data: which config fields it shows, in what order, with what label, control kind,
choices and placeholder (built from the pydantic models); how a value goes into a control and back; and the check
of one field against its section. No widgets (``loratui.ui.widgets.form`` draws them and re-exports these names).
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from textual.widgets import Select

from loratui.core.config import RunConfig, format_validation_error
from loratui.core.config_errors import plain_words
from loratui.core.paths import looks_like_path
from loratui.core.presets import PRESETS

Kind = Literal["text", "select", "bool", "list", "targets"]

#: section name -> pydantic model
SECTION_MODELS: dict[str, type[BaseModel]] = {
    name: info.annotation for name, info in RunConfig.model_fields.items()  # type: ignore[misc]
}

SECTION_TITLES = {
    "model": "Model",
    "method": "Method and quantization",
    "lora": "LoRA",
    "data": "Data",
    "train": "Training",
    "output": "Output",
}

#: (section, key, label) in form order; types, choices and help come from the pydantic fields
LAYOUT: list[tuple[str, str, str]] = [
    ("model", "name", "Base model"),
    ("model", "task", "Task"),
    ("model", "num_labels", "Labels"),
    ("model", "dtype", "Weight dtype"),
    ("model", "trust_remote_code", "Remote code"),
    ("method", "kind", "Method"),
    ("method", "quant_type", "4-bit type"),
    ("method", "double_quant", "Double quant"),
    ("method", "compute_dtype", "Compute dtype"),
    ("method", "objective", "Objective"),
    ("method", "beta", "Beta"),
    ("method", "loss_type", "DPO loss"),
    ("method", "label_smoothing", "Label smoothing"),
    ("method", "desirable_weight", "Good weight"),
    ("method", "undesirable_weight", "Bad weight"),
    ("method", "start_from", "Start from"),
    ("lora", "r", "Rank r"),
    ("lora", "alpha", "Alpha"),
    ("lora", "dropout", "Dropout"),
    ("lora", "preset", "Preset"),
    ("lora", "target_modules", "Targets"),
    ("lora", "bias", "Bias"),
    ("lora", "rslora", "rsLoRA"),
    ("lora", "dora", "DoRA"),
    ("lora", "modules_to_save", "Also train"),
    ("data", "source", "Data source"),
    ("data", "format", "Format"),
    ("data", "text_column", "Text column"),
    ("data", "instruction_column", "Instr. column"),
    ("data", "input_column", "Input column"),
    ("data", "output_column", "Output column"),
    ("data", "messages_column", "Chat column"),
    ("data", "label_column", "Label column"),
    ("data", "prompt_column", "Prompt column"),
    ("data", "chosen_column", "Chosen column"),
    ("data", "rejected_column", "Rejected column"),
    ("data", "completion_column", "Answer column"),
    ("data", "validation_file", "Validation file"),
    ("data", "validation_fraction", "Val. fraction"),
    ("data", "max_length", "Max length"),
    ("data", "max_samples", "Max examples"),
    ("data", "system_prompt", "System prompt"),
    ("data", "packing", "Packing"),
    ("train", "epochs", "Epochs"),
    ("train", "max_steps", "Max steps"),
    ("train", "batch_size", "Batch size"),
    ("train", "grad_accum", "Grad accum"),
    ("train", "gpus", "GPUs"),
    ("train", "distributed", "Multi-GPU"),
    ("train", "lr", "Learning rate"),
    ("train", "scheduler", "Scheduler"),
    ("train", "warmup_ratio", "Warmup ratio"),
    ("train", "warmup_steps", "Warmup steps"),
    ("train", "weight_decay", "Weight decay"),
    ("train", "logging_steps", "Log every"),
    ("train", "eval_steps", "Eval every"),
    ("train", "save_steps", "Save every"),
    ("train", "save_total_limit", "Keep ckpts"),
    ("train", "gradient_checkpointing", "Grad ckpting"),
    ("train", "precision", "Precision"),
    ("train", "optimizer", "Optimizer"),
    ("train", "seed", "Seed"),
    ("output", "runs_dir", "Runs folder"),
    ("output", "name", "Run name"),
]

PLACEHOLDERS = {
    ("model", "name"): "alias, folder or org/name",
    ("lora", "target_modules"): "empty: architecture default",
    ("lora", "modules_to_save"): "e.g. score, classifier",
    ("method", "start_from"): "empty: a new adapter",
    ("data", "source"): "file, folder, sample:NAME, hub",
    ("data", "validation_file"): f"empty: hold out a fraction",
    ("data", "max_samples"): "empty: all",
    ("data", "system_prompt"): "empty: none",
    ("train", "max_steps"): "empty: use epochs",
    ("train", "eval_steps"): "empty: each epoch",
    ("train", "save_steps"): "empty: each epoch",
    ("train", "save_total_limit"): "empty: keep all",
    ("train", "eval_batch_size"): "empty: batch size",
    ("train", "gpus"): "auto, a count, or cards 0,2",
    ("output", "name"): "empty: model-method-time",
}

BOOL_TEXT = {
    "model.trust_remote_code": "run the repo's own code",  # in 24 cells: one line at 80 columns
    "method.double_quant": "quantize constants too",
    "lora.rslora": "scale by alpha/sqrt(r)",
    "lora.dora": "weight-decomposed LoRA",
    "data.packing": "concatenate examples",
    "train.gradient_checkpointing": "less memory, ~30% slower",
}

#: fields shown only for some values of another field: (section, key) -> predicate on the current values
DATA_COLUMNS = {
    "text": ("text_column",),
    "alpaca": ("instruction_column", "input_column", "output_column"),
    "chat": ("messages_column",),
    "classification": ("text_column", "label_column"),
    "preference": ("prompt_column", "chosen_column", "rejected_column"),
}
#: kto also reads unpaired rows: one answer, judged good or bad by the label column
KTO_COLUMNS = ("completion_column", "label_column")
#: fields with a "pick" button beside the control: path -> (button id, its tooltip)
PICKERS = {
    "lora.target_modules": ("pick-targets", "Pick from the model's own layers"),
    "method.start_from": ("pick-start", "Pick a run whose adapter to continue"),
}


@dataclass
class FieldSpec:
    section: str
    key: str
    label: str
    kind: Kind
    choices: list[str] = field(default_factory=list)
    optional: bool = False
    help: str = ""
    placeholder: str = ""

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def control_id(self) -> str:
        return f"f-{self.section}-{self.key}"

    @property
    def field_id(self) -> str:
        return f"field-{self.section}-{self.key}"


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(annotation without None, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union or type(annotation).__name__ == "UnionType":
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) == 1:
            return rest[0], optional
        return typing.Union[tuple(rest)], optional  # type: ignore[return-value]
    return annotation, False


def build_specs() -> list[FieldSpec]:
    specs = []
    for section, key, label in LAYOUT:
        info = SECTION_MODELS[section].model_fields[key]
        ann, optional = _unwrap(info.annotation)
        choices: list[str] = []
        if (section, key) == ("lora", "target_modules"):
            kind: Kind = "targets"
        elif (section, key) == ("lora", "preset"):
            kind, choices = "select", list(PRESETS)
        elif typing.get_origin(ann) is Literal:
            kind, choices = "select", [str(a) for a in typing.get_args(ann)]
        elif ann is bool:
            kind = "bool"
        elif typing.get_origin(ann) is list:
            kind = "list"
        else:
            kind = "text"
        specs.append(FieldSpec(section, key, label, kind, choices, optional, (info.description or "").strip(),
                               PLACEHOLDERS.get((section, key), "")))
    return specs


SPECS: list[FieldSpec] = build_specs()
SPECS_BY_PATH: dict[str, FieldSpec] = {s.path: s for s in SPECS}


# -- value conversion --------------------------------------------------------------------------------------------


def format_value(spec: FieldSpec, value: Any) -> Any:
    """Config value -> what the control holds (text, a choice, or a bool)."""
    if spec.kind == "bool":
        return bool(value)
    if spec.kind == "select":
        return Select.NULL if value is None else str(value)
    if value is None:
        return ""
    if spec.path == "train.gpus" and isinstance(value, list) and len(value) == 1:
        return f"[{value[0]}]"  # one card by its index; a bare number is a count
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def parse_value(spec: FieldSpec, raw: Any) -> Any:
    """What the control holds -> the raw value pydantic validates (strings are coerced by pydantic)."""
    if spec.kind == "bool":
        return bool(raw)
    if spec.kind == "select":
        return None if raw is Select.NULL or raw is None else raw
    text = str(raw).strip()
    if spec.path == "train.gpus":
        return parse_gpus(text)
    if spec.kind == "list":
        return [s.strip() for s in text.split(",") if s.strip()]
    if text == "" and spec.optional:
        return None
    return text


GPUS_HELP = "auto, a count of cards (2), or card indices (0,2 or [1] for card 1 alone)"


def parse_gpus(text: str) -> Any:
    """train.gpus as typed: '' or 'auto' -> 'auto'; '2' -> 2 (a count); '0,2', '[1]' -> [0, 2], [1] (indices).
    Anything else comes back as the text (the field then says what to type)."""
    low = text.strip().lower()
    if low in ("", "auto"):
        return "auto"
    if low.isdigit():
        return int(low)
    parts = [p.strip() for p in low.strip("[]").split(",")]
    if "," in low or low.startswith("["):
        items = [p for p in parts if p]
        if items and all(p.isdigit() for p in items):
            return [int(p) for p in items]
    return text


def validate_field(spec: FieldSpec, section_values: dict[str, Any], raw: Any) -> tuple[Any, str | None]:
    """Validate ``raw`` for ``spec`` with its section's other (valid) values. Returns (value, error message)."""
    if spec.path == "train.gpus" and isinstance(raw, str) and raw != "auto":
        return None, GPUS_HELP
    if spec.path == "train.gpus" and raw == 0:
        return None, "a count of at least 1 ([0]: card 0 alone)"
    model = SECTION_MODELS[spec.section]
    try:
        obj = model.model_validate({**section_values, spec.key: raw})
    except ValidationError as err:
        # a bound's message says the field's default (core.config_errors): a value to go back to
        return None, short_message(format_validation_error(err, prefix=spec.section), spec)
    return getattr(obj, spec.key), None


def short_message(message: str, spec: FieldSpec) -> str:
    """Drop the leading ``section.key:`` when the message is shown under that very field; plainer pydantic words."""
    head = f"{spec.path}: "
    if message.startswith(head):
        message = message[len(head):]
    if message.endswith(", got ''"):
        return "required"
    return plain_words(message)


def extra_check(spec: FieldSpec, value: Any, layers: list[str] | None) -> str | None:
    """Checks pydantic cannot make alone: local files that must exist, target modules the model must have, an
    adapter to continue that is there."""
    if spec.path == "method.start_from" and isinstance(value, str) and value:
        return adapter_problem(value)
    if spec.path in ("data.source", "data.validation_file", "model.name") and isinstance(value, str) and value:
        if value.startswith("sample:"):
            return None
        if (looks_like_path(value, data_file=spec.path != "model.name")
                and not Path(os.path.expandvars(value)).expanduser().exists()):
            return f"no such file or folder: {value}"
    if spec.path == "lora.target_modules" and isinstance(value, list) and layers is not None:
        known = set(layers)
        unknown = [m for m in value if m.rsplit(".", 1)[-1] not in known]
        if unknown:
            shown = ", ".join(layers[:8]) + (", ..." if len(layers) > 8 else "")
            return f"not in this model: {', '.join(unknown)} (it has: {shown})"
    return None


def adapter_problem(spec: str) -> str | None:
    """Why ``spec`` names no adapter (the engine reads the folder itself, or a run folder's adapter/), or None."""
    path = Path(os.path.expandvars(spec)).expanduser()
    if any((c / "adapter_config.json").is_file() for c in (path, path / "adapter")):
        return None
    if not path.exists():
        return f"no such file or folder: {spec}"
    return "holds no adapter (no adapter_config.json, nor adapter/): a finished run's folder, or its adapter/"
