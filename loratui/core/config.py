"""Run configuration: pydantic models, one per section, loaded from and saved to YAML.

Unknown keys are errors (a typo must not pass silently) and every error names the field path and what is allowed.
This module is light (pydantic + yaml only): the app imports it at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from loratui.core.config_base import (LORA_METHODS, MAX_LORA_R, MAX_TEXT, PREFERENCE_OBJECTIVES,  # noqa: F401
                                      QUANTIZED_METHODS, DataFormat, DpoLoss, MethodKind, Objective, Section,
                                      Switch, Task, switch_value)
from loratui.core.config_errors import short as _short
from loratui.core.config_errors import validation_message, yaml_problem
from loratui.core.config_train import TrainSection
from loratui.core.errors import ConfigError


class ModelSection(Section):
    name: str = "smollm2-135m-instruct"
    """Base model: a built-in alias, a local folder, or a hub id (org/name)."""
    gguf_file: Optional[str] = None
    """GGUF file inside the model folder, when the base model is a GGUF checkpoint."""
    task: Task = "causal-lm"
    """causal-lm (instruction/chat tuning) or seq-cls (sequence classification)."""
    num_labels: int = Field(2, ge=2, le=100_000)
    """Number of classes for seq-cls."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype for the unquantized base (auto: bf16 on a bf16 GPU, else fp32)."""
    trust_remote_code: bool = False
    """Allow code from the model repository to run."""
    allow_pickle: bool = False
    """Allow .bin (pickle) weights for the model and adapters. Unpickling can run code hidden in the file; leave off
    unless the files come from someone you trust (safetensors weights never need it)."""


class MethodSection(Section):
    kind: MethodKind = "lora"
    """lora, qlora (4-bit base), lora-8bit (8-bit base), full (every weight) or head-only (frozen backbone)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type for qlora."""
    double_quant: bool = True
    """Quantize the quantization constants too (qlora; saves about 0.4 bits a parameter)."""
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Dtype the quantized layers compute in."""
    objective: Objective = "sft"
    """What the run learns from: sft (the answers themselves), or preferences (data.format preference): dpo (chosen
    over rejected, against a reference: the base with the adapter off), orpo (reference-free: the chosen answer's
    loss plus an odds-ratio term), kto (single answers marked good or bad, unpaired)."""
    beta: float = Field(0.1, gt=0, le=100)
    """Preference strength: how far the policy may move from the reference (dpo, kto) or the odds-ratio term's
    weight (orpo). 0.1 is usual; higher keeps closer to the reference."""
    loss_type: DpoLoss = "sigmoid"
    """DPO's loss: sigmoid (the paper's), ipo, hinge, robust, bco_pair, sppo_hard, nca_pair, apo_zero, apo_down,
    sigmoid_norm (length-normalised), exo_pair (needs label_smoothing > 0)."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """DPO: the share of pairs assumed mislabelled (robust, exo_pair), in [0, 0.5)."""
    desirable_weight: float = Field(1.0, gt=0, le=1000)
    """KTO: weight of the good answers' loss (raise it when good answers are the fewer)."""
    undesirable_weight: float = Field(1.0, gt=0, le=1000)
    """KTO: weight of the bad answers' loss."""
    start_from: Optional[str] = None
    """An adapter to continue training (an adapter folder, or a run folder: its adapter/), for example an SFT run's
    before DPO; its LoRA settings replace the lora section's. Empty: a new adapter on the base model."""

    @model_validator(mode="after")
    def _preference_knobs(self) -> "MethodSection":
        if self.loss_type != "sigmoid" and self.objective != "dpo":
            raise ValueError(f"method.loss_type: a DPO setting; objective {self.objective} has no loss variants "
                             "(remove loss_type)")
        if self.loss_type == "exo_pair" and self.label_smoothing == 0:
            raise ValueError("method.label_smoothing: must be above 0 for loss_type exo_pair (its paper uses 0.001)")
        if self.start_from is not None and self.kind not in LORA_METHODS:
            raise ValueError(f"method.start_from: continues a LoRA adapter; method.kind {self.kind} trains none "
                             "(use lora, qlora or lora-8bit)")
        return self


class LoraSection(Section):
    r: int = 8
    """Rank of the update matrices."""
    alpha: float = 16
    """Scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with rslora)."""
    dropout: float = 0.05
    """Dropout on the LoRA input, in [0, 1)."""
    target_modules: Union[list[str], Literal["all-linear"], None] = None
    """Module names to adapt, or all-linear. Empty: the preset, else the architecture's default."""
    preset: Optional[str] = None
    """A target-module preset name (see `loratui presets`)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train."""
    rslora: bool = False
    """Rank-stabilised scaling alpha/sqrt(r)."""
    dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    modules_to_save: list[str] = Field(default_factory=list)
    """Extra modules trained in full and saved with the adapter (for example a classifier head)."""

    @field_validator("r")
    @classmethod
    def _r_positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be a positive whole number (try 8 or 16)")
        if v > MAX_LORA_R:
            raise ValueError(f"must be at most {MAX_LORA_R}, got {v} (ranks of 8 to 64 are usual)")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be positive (common: alpha = r or 2*r)")
        return v

    @field_validator("dropout")
    @classmethod
    def _dropout_range(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("must be in [0, 1) (typical: 0.05 to 0.1)")
        return v

    @field_validator("target_modules", mode="before")
    @classmethod
    def _targets(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "all-linear":
            v = [s.strip() for s in v.split(",") if s.strip()]
        if isinstance(v, list) and not v:
            return None
        return v


class DataSection(Section):
    source: str = "sample:contacts-json.jsonl"
    """A local json/jsonl/csv/parquet file, a folder of such files, sample:NAME for a shipped sample, or a hub dataset name."""
    format: DataFormat = "alpaca"
    """text, alpaca (instruction/input/output), chat (messages), classification (text + label) or preference
    (prompt + chosen + rejected; for kto also prompt + completion + label)."""
    split: str = "train"
    """Split to train on (hub datasets and folders)."""
    subset: Optional[str] = None
    """Hub dataset configuration name."""
    text_column: str = "text"
    instruction_column: str = "instruction"
    input_column: str = "input"
    output_column: str = "output"
    messages_column: str = "messages"
    label_column: str = "label"
    """Classification: the label. Preference (kto, unpaired rows): true for a good answer, false for a bad one."""
    prompt_column: str = "prompt"
    """Preference: the prompt (a string, or a list of chat messages)."""
    chosen_column: str = "chosen"
    """Preference: the better answer (a string, or the assistant's messages)."""
    rejected_column: str = "rejected"
    """Preference: the worse answer."""
    completion_column: str = "completion"
    """Preference, unpaired rows (kto): the one answer, judged by the label column."""
    validation_file: Optional[str] = None
    """A separate validation file (or hub split name). Empty: split off validation_fraction."""
    validation_fraction: float = 0.1
    """Share of the training data held out for evaluation when no validation_file is given (0 disables eval)."""
    max_length: int = Field(512, ge=8, le=10_000_000)
    """Longest example in tokens; longer ones are truncated."""
    max_samples: Optional[int] = Field(None, ge=1, le=10**12)
    """Use only the first N training examples."""
    eval_samples: Optional[int] = Field(None, ge=1, le=10**12)
    """Evaluate on only the first N held-out examples during training (the curve, base model included); the whole
    held-out set is evaluated once at the end and that is the final eval. Empty: all of them every time."""
    system_prompt: Optional[str] = None
    """System message prepended to chat/alpaca examples rendered with a chat template."""
    packing: Switch = "auto"
    """Padding-free batching for causal LM (examples concatenated, attention kept per example); auto: on a GPU."""

    _packing_bool = field_validator("packing", mode="before")(lambda v: switch_value(v))

    @field_validator("validation_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("must be in [0, 1) (0.1 holds out a tenth)")
        return v



class OutputSection(Section):
    runs_dir: str = "runs"
    """Folder holding one folder per run."""
    name: Optional[str] = None
    """Run folder name (empty: model-method-timestamp)."""

    @field_validator("name")
    @classmethod
    def _one_component(cls, v: Optional[str]) -> Optional[str]:
        # a run stays inside the runs folder: "../x", "a/b" or "/abs" would write (and hide) it elsewhere
        if v is not None and (v in (".", "..") or "/" in v or "\\" in v or "\0" in v or len(v) > 255):
            raise ValueError("names are a single path component inside the runs folder (no '/', not '..')")
        return v or None


class RunConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    method: MethodSection = Field(default_factory=MethodSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        """``method: qlora`` is short for ``method: {kind: qlora}``."""
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cross(self) -> "RunConfig":
        if self.model.task == "seq-cls" and self.data.format != "classification":
            raise ValueError("data.format must be classification when model.task is seq-cls")
        if self.data.format == "classification" and self.model.task != "seq-cls":
            raise ValueError("model.task must be seq-cls when data.format is classification")
        if self.method.kind == "head-only" and self.model.task != "seq-cls":
            raise ValueError("method.kind head-only needs model.task seq-cls (a causal LM has no separate head)")
        objective = self.method.objective
        if objective in PREFERENCE_OBJECTIVES:
            if self.data.format != "preference":
                raise ValueError(f"data.format: must be preference when method.objective is {objective} (rows of "
                                 "prompt, chosen, rejected)")
            if self.model.task != "causal-lm":
                raise ValueError(f"model.task: method.objective {objective} needs causal-lm")
            if not self.uses_lora:
                raise ValueError(f"method.kind: objective {objective} needs a LoRA method (lora, qlora, lora-8bit), "
                                 f"not {self.method.kind}: its reference is the base with the adapter off")
            if self.data.packing == "on":
                raise ValueError(f"data.packing: TRL's {objective} trainer pads its pairs; packing applies to sft "
                                 "(set auto or off)")
            if objective == "kto" and self.train.batch_size < 2:
                raise ValueError("train.batch_size: must be at least 2 for objective kto (its KL estimate pairs each "
                                 "answer with another row's prompt in the same micro-batch)")
        elif self.data.format == "preference":
            raise ValueError("method.objective: must be dpo, orpo or kto when data.format is preference (sft learns "
                             "from answers, not from pairs)")
        if self.train.nodes > 1 and not self.train.rdzv_endpoint:
            raise ValueError("train.rdzv_endpoint (host:port of the first node) is needed when train.nodes > 1")
        return self

    # -- YAML -------------------------------------------------------------------------------------------------

    def to_yaml(self) -> str:
        """YAML with defaults left out and key order kept, so saved files stay short. The model and the data
        source are always written (the file must say what it trains on by itself), and target modules that are
        just the preset's are left to the preset."""
        from loratui.core.presets import PRESETS, preset_modules

        data = self.model_dump(exclude_defaults=True, mode="json")
        data["model"] = {"name": self.model.name, **data.get("model", {})}
        data["data"] = {"source": self.data.source, **data.get("data", {})}
        lora = data.get("lora", {})
        preset = lora.get("preset")
        if preset in PRESETS and lora.get("target_modules") == preset_modules(preset):
            del lora["target_modules"]
        data = {k: data[k] for k in type(self).model_fields if data.get(k)}
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)

    def full_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path, *, full: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.full_yaml() if full else self.to_yaml())
        tmp.replace(path)
        return path

    @property
    def uses_lora(self) -> bool:
        return self.method.kind in LORA_METHODS

    @property
    def quantized(self) -> bool:
        return self.method.kind in QUANTIZED_METHODS


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """First error as one line: ``lora.r: must be a positive whole number (try 8 or 16)``."""
    return validation_message(err, RunConfig, prefix)


def config_from_dict(data: Any, *, source: str = "config") -> RunConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the file must hold a mapping of sections (model, method, lora, data, train, output)",
                          field=source)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    except RecursionError:
        raise ConfigError("nested too deeply to be a config", field=source) from None


def load_config(path: str | Path) -> RunConfig:
    """Load a YAML config. Relative data paths are resolved against the config file's folder."""
    path = Path(path)
    cfg = config_from_dict(read_config_data(path), source=str(path))
    return resolve_paths(cfg, path.parent)


def read_config_data(path: Path) -> Any:
    """A config file's YAML as Python data, not yet validated; a file that is not readable YAML is one line."""
    try:
        if not path.is_file():
            raise ConfigError(f"no such file {_short(path, 200)}", field="config", hint="give the path of a YAML config")
        raw = path.read_bytes()
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {_short(path, 200)}: {getattr(err, 'strerror', None) or err}",
                          field="config") from None
    if len(raw) > 10 * 2**20:
        raise ConfigError(f"{path} is {len(raw) // 2**20} MB; a config is a few KB of YAML", field="config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})",
                          field="config", hint="save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML{yaml_problem(err)}", field="config",
                          hint="YAML indents with spaces, not tabs" if "'\\t'" in str(err) else None) from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a config", field="config") from None
    except ValueError as err:  # e.g. an integer with more digits than Python converts
        raise ConfigError(f"{path} holds a value that cannot be read: {_short(err, 120)}", field="config") from None
    return data


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Make relative local paths (data files, model folders) absolute against ``base`` when they exist there."""
    for section, key in (("data", "source"), ("data", "validation_file"), ("model", "name"),
                         ("method", "start_from")):
        value = getattr(getattr(cfg, section), key)
        if not value or value.startswith("sample:") or Path(value).is_absolute():
            continue
        candidate = (base / value)
        if candidate.exists():
            setattr(getattr(cfg, section), key, str(candidate.resolve()))
    return cfg


def default_config() -> RunConfig:
    return RunConfig()
