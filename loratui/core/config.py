"""Run configuration: pydantic models, one per section, loaded from and saved to YAML.

Unknown keys are errors (a typo must not pass silently) and every error names the field path and what is allowed.
This module is light (pydantic + yaml only): the app imports it at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loratui.core.errors import ConfigError

Task = Literal["causal-lm", "seq-cls"]
MethodKind = Literal["lora", "qlora", "lora-8bit", "full", "head-only"]
DataFormat = Literal["text", "alpaca", "chat", "classification"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Optimizer = Literal[
    "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "adamw_8bit", "paged_adamw_32bit", "adafactor", "sgd"
]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]

#: methods that need bitsandbytes and a CUDA GPU
QUANTIZED_METHODS = ("qlora", "lora-8bit")
#: methods that attach LoRA adapters
LORA_METHODS = ("lora", "qlora", "lora-8bit")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelSection(Section):
    name: str = "smollm2-135m-instruct"
    """Base model: a built-in alias, a local folder, or a hub id (org/name)."""
    gguf_file: Optional[str] = None
    """GGUF file inside the model folder, when the base model is a GGUF checkpoint."""
    task: Task = "causal-lm"
    """causal-lm (instruction/chat tuning) or seq-cls (sequence classification)."""
    num_labels: int = Field(2, ge=2)
    """Number of classes for seq-cls."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype for the unquantized base (auto: bf16 on a bf16 GPU, else fp32)."""
    trust_remote_code: bool = False
    """Allow code from the model repository to run."""


class MethodSection(Section):
    kind: MethodKind = "lora"
    """lora, qlora (4-bit base), lora-8bit (8-bit base), full (every weight) or head-only (frozen backbone)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type for qlora."""
    double_quant: bool = True
    """Quantize the quantization constants too (qlora; saves about 0.4 bits a parameter)."""
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Dtype the quantized layers compute in."""


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
    """text, alpaca (instruction/input/output), chat (messages) or classification (text + label)."""
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
    validation_file: Optional[str] = None
    """A separate validation file (or hub split name). Empty: split off validation_fraction."""
    validation_fraction: float = 0.1
    """Share of the training data held out for evaluation when no validation_file is given (0 disables eval)."""
    max_length: int = Field(512, ge=8)
    """Longest example in tokens; longer ones are truncated."""
    max_samples: Optional[int] = Field(None, ge=1)
    """Use only the first N training examples."""
    system_prompt: Optional[str] = None
    """System message prepended to chat/alpaca examples rendered with a chat template."""
    packing: bool = False
    """Padding-free batching for causal LM (examples concatenated, attention kept per example)."""

    @field_validator("validation_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError("must be in [0, 1) (0.1 holds out a tenth)")
        return v


class TrainSection(Section):
    epochs: float = Field(3.0, gt=0)
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: Optional[int] = Field(None, ge=1)
    """Stop after this many optimizer steps."""
    batch_size: int = Field(8, ge=1)
    """Examples per device per step."""
    eval_batch_size: Optional[int] = Field(None, ge=1)
    grad_accum: int = Field(1, ge=1)
    """Gradient accumulation steps."""
    lr: float = Field(2e-4, gt=0)
    """Peak learning rate (LoRA: 1e-4 to 3e-4; full fine-tuning: about 2e-5)."""
    scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    logging_steps: int = Field(5, ge=1)
    eval_steps: Optional[int] = Field(None, ge=1)
    """Evaluate every N steps (empty: once per epoch)."""
    eval_on_start: bool = True
    """Evaluate the untrained model first, so the curve starts from the base model's loss."""
    save_steps: Optional[int] = Field(None, ge=1)
    """Checkpoint every N steps (empty: once per epoch)."""
    save_total_limit: Optional[int] = Field(2, ge=1)
    gradient_checkpointing: bool = False
    precision: Precision = "auto"
    """auto picks bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    optimizer: Optimizer = "adamw_torch"
    seed: int = 42
    dataloader_workers: int = Field(0, ge=0)


class OutputSection(Section):
    runs_dir: str = "runs"
    """Folder holding one folder per run."""
    name: Optional[str] = None
    """Run folder name (empty: model-method-timestamp)."""


class RunConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    method: MethodSection = Field(default_factory=MethodSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _cross(self) -> "RunConfig":
        if self.model.task == "seq-cls" and self.data.format != "classification":
            raise ValueError("data.format must be classification when model.task is seq-cls")
        if self.data.format == "classification" and self.model.task != "seq-cls":
            raise ValueError("model.task must be seq-cls when data.format is classification")
        if self.method.kind == "head-only" and self.model.task != "seq-cls":
            raise ValueError("method.kind head-only needs model.task seq-cls (a causal LM has no separate head)")
        return self

    # -- YAML -------------------------------------------------------------------------------------------------

    def to_yaml(self) -> str:
        """YAML with defaults left out and key order kept, so saved files stay short."""
        data = self.model_dump(exclude_defaults=True, mode="json")
        data = {k: v for k, v in data.items() if v}
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
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-")) or "config"
    if prefix:
        loc = f"{prefix}.{loc}" if loc != "config" else prefix
    kind = e["type"]
    if kind == "extra_forbidden":
        section, _, key = loc.rpartition(".")
        model = _section_model(section)
        allowed = ", ".join(model.model_fields) if model else ""
        return f"{loc}: unknown key '{key}' (allowed here: {allowed})"
    if kind == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        return f"{loc}: {e['input']!r} is not allowed (choose one of {expected})"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_parsing",
                "float_parsing", "bool_parsing", "int_from_float"):
        msg = f"{msg}, got {e['input']!r}"
    return f"{loc}: {msg}"


def _section_model(path: str) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    if not path:
        return model
    for part in path.split("."):
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


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


def load_config(path: str | Path) -> RunConfig:
    """Load a YAML config. Relative data paths are resolved against the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file {path}", field="config", hint="give the path of a YAML config")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}", field="config") from None
    cfg = config_from_dict(data, source=str(path))
    return resolve_paths(cfg, path.parent)


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Make relative local paths (data files, model folders) absolute against ``base`` when they exist there."""
    for section, key in (("data", "source"), ("data", "validation_file"), ("model", "name")):
        value = getattr(getattr(cfg, section), key)
        if not value or value.startswith("sample:") or Path(value).is_absolute():
            continue
        candidate = (base / value)
        if candidate.exists():
            setattr(getattr(cfg, section), key, str(candidate.resolve()))
    return cfg


def default_config() -> RunConfig:
    return RunConfig()
