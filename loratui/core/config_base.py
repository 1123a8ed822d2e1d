"""Building blocks of the run configuration (loratui.core.config): the value types every section shares, the
limits, and ``Section``, the pydantic base that forbids unknown keys, NaN and NUL bytes. Light: pydantic only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

Task = Literal["causal-lm", "seq-cls"]
#: each task's peft task type (``task_type`` in an adapter's adapter_config.json)
PEFT_TASK_TYPES: dict[str, str] = {"causal-lm": "CAUSAL_LM", "seq-cls": "SEQ_CLS"}


def task_of_peft(task_type: str | None) -> str:
    """The task an adapter's peft task type names: a language model's where it names none (or another one)."""
    return next((task for task, peft in PEFT_TASK_TYPES.items() if peft == task_type), "causal-lm")

MethodKind = Literal["lora", "qlora", "lora-8bit", "full", "head-only"]
DataFormat = Literal["text", "alpaca", "chat", "classification", "preference"]
#: what the run learns from: demonstrations (sft) or preferences (dpo, orpo, kto)
Objective = Literal["sft", "dpo", "orpo", "kto"]
#: DPO's loss variants, as TRL names them (sigmoid: the paper's DPO; ipo; hinge (SLiC); robust (cDPO-like, with
#: label_smoothing); bco_pair; sppo_hard; nca_pair; apo_zero / apo_down; sigmoid_norm (length-normalised); exo_pair)
DpoLoss = Literal["sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down",
                  "sigmoid_norm", "exo_pair"]
#: objectives that learn from preference data
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Optimizer = Literal[
    "auto", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "adamw_8bit", "paged_adamw_32bit", "adafactor",
    "sgd",
]
Switch = Literal["auto", "on", "off"]


def switch_value(v: Any) -> Any:
    """YAML reads a bare on/off (and true/false) as a bool: take it as the switch the user meant."""
    return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


Attention = Literal["auto", "varlen", "sdpa", "flex", "eager"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]

#: longest string a config field may hold; largest count (steps, examples, sizes) a field may hold
MAX_TEXT = 4096
BIG = 10**9
#: learning rates above this diverge for every model and optimizer loratui offers (the weights go to inf or NaN)
MAX_LR = 1.0
#: LoRA ranks above this are typos (r=8000 would dwarf the layers it adapts)
MAX_LORA_R = 4096

#: methods that need bitsandbytes and a CUDA GPU
QUANTIZED_METHODS = ("qlora", "lora-8bit")
#: methods that attach LoRA adapters
LORA_METHODS = ("lora", "qlora", "lora-8bit")


class Section(BaseModel):
    # NaN and infinities never load (a NaN alpha or lr "trains" to non-finite weights); no string is longer than
    # a path can be (a 100k-character name must be a one-line error, not a traceback from the file system)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              allow_inf_nan=False, str_max_length=MAX_TEXT)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        """A NUL byte fits no path, name or prompt: the file system would raise deep inside a load."""
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, str) and "\0" in item:
                raise ValueError("contains a NUL byte (\\0); paths, names and texts cannot: remove it")
        return v
