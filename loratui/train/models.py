"""Base models: resolving names (alias, local folder, hub id), loading with the chosen method, applying LoRA.

Heavy module (torch, transformers, peft): import it from the engine or from a worker thread, never at UI start-up.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from loratui.core.config import LORA_METHODS, RunConfig
from loratui.core.config_base import PEFT_TASK_TYPES
from loratui.core.errors import ConfigError, ModelError
from loratui.core.presets import PRESETS, preset_for_model_type, preset_modules
from loratui.train.resolve import (  # noqa: F401 - re-exported: resolving a model by name lives in train/resolve.py
    Alias, ALIASES, alias_like, cache_dir, ResolvedModel, _package_dir, resolve_model, _resolve_model, slug_for, convert_gguf_once, PICKLE_HINT, pickle_only_weights, check_pickle, is_unsafe_pickle_error, unsafe_pickle_error, _hub_error, _CONFIG_CACHE, _HUB_REACHABLE, hub_unreachable, _cached_on_disk,
)


def load_model_config(cfg: RunConfig, resolved: ResolvedModel | None = None):
    """AutoConfig for the model, cached per model (failures too: a hub id that can't be reached fails once)."""
    import copy

    from transformers import AutoConfig

    resolved = resolved or resolve_model(cfg.model)
    key = (resolved.path, resolved.gguf_file, cfg.model.trust_remote_code)
    if key not in _CONFIG_CACHE and not resolved.local and not _cached_on_disk(resolved.path):
        why = hub_unreachable()
        if why:
            alias = alias_like(resolved.path)
            raise ModelError(f"'{resolved.path}' is not a local folder and the hub is offline: {why}",
                             field="model.name", hint=f"did you mean {alias} (built in, works offline)?" if alias
                             else "give a local folder (or a .gguf file), or connect and retry",
                             summary="no such local folder, and the hub can't be reached (offline)")
    if key not in _CONFIG_CACHE:
        try:
            _CONFIG_CACHE[key] = AutoConfig.from_pretrained(
                resolved.path, trust_remote_code=cfg.model.trust_remote_code, **resolved.kwargs())
        except Exception as err:  # noqa: BLE001 - translated into one line
            _CONFIG_CACHE[key] = _hub_error(resolved, err)
    cached = _CONFIG_CACHE[key]
    if isinstance(cached, ModelError):
        if resolved.local:  # a local folder may be fixed at any moment: don't remember its failure
            del _CONFIG_CACHE[key]
        raise cached
    mc = copy.deepcopy(cached)
    if cfg.model.task == "seq-cls":
        mc.num_labels = cfg.model.num_labels
    return mc


def model_max_length(model_config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def auto_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "seq-cls" else AutoModelForCausalLM


def build_meta_model(cfg: RunConfig, model_config=None):
    """The model's architecture with no weights (meta device): exact parameter counts and layer names, instantly."""
    import torch

    model_config = model_config or load_model_config(cfg)
    cls = auto_class(cfg.model.task)
    with torch.device("meta"):
        return cls.from_config(model_config, trust_remote_code=cfg.model.trust_remote_code)


def linear_module_names(model) -> list[str]:
    """Sorted unique leaf names of the model's linear layers (nn.Linear, GPT-2 Conv1D, bnb layers)."""
    import torch.nn as nn

    names = set()
    for full, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def head_names(model) -> list[str]:
    """Names of output heads LoRA should not adapt (lm_head, classifier, score)."""
    out = []
    for attr in ("lm_head", "classifier", "score", "cls", "qa_outputs"):
        if getattr(model, attr, None) is not None:
            out.append(attr)
    return out


def list_linear_layers(cfg: RunConfig) -> list[str]:
    """What the setup screen's target picker offers: the model's own linear layer names, heads excluded."""
    model = build_meta_model(cfg)
    heads = set(head_names(model))
    return [n for n in linear_module_names(model) if n not in heads]


#: encoder families: a bare checkpoint of these is a classifier base, not a causal LM
ENCODER_TYPES = ("bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "albert",
                 "modernbert", "mpnet", "camembert")


def guess_task(cfg: RunConfig) -> str:
    """'seq-cls' for an encoder checkpoint (BERT and friends, whose causal-LM or masked-LM heads are not what one
    fine-tunes), else 'causal-lm'."""
    model_config = load_model_config(cfg)
    archs = getattr(model_config, "architectures", None) or []
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return "causal-lm"
    return "seq-cls" if getattr(model_config, "model_type", None) in ENCODER_TYPES else "causal-lm"


def describe_linear_layers(cfg: RunConfig) -> list[dict]:
    """Per target-module name (heads excluded): how many layers have it, their shape (in -> out features; the
    most common one), and the parameters they hold together (weights and biases)."""
    model = build_meta_model(cfg)
    heads = set(head_names(model))
    import torch.nn as nn

    rows: dict[str, dict] = {}
    for full, module in model.named_modules():
        name = full.rsplit(".", 1)[-1]
        linear = isinstance(module, nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt")
        if not linear or name in heads or full.split(".", 1)[0] in heads:
            continue
        weight = module.weight
        shape = (weight.shape[0], weight.shape[1]) if type(module).__name__ == "Conv1D" else (
            weight.shape[1], weight.shape[0])
        row = rows.setdefault(name, {"name": name, "count": 0, "shapes": {}, "params": 0})
        row["count"] += 1
        row["shapes"][shape] = row["shapes"].get(shape, 0) + 1
        row["params"] += sum(p.numel() for p in module.parameters(recurse=False))
    out = []
    for name in sorted(rows):
        row = rows[name]
        row["shape"] = max(row["shapes"], key=row["shapes"].get)
        out.append(row)
    return out


def resolve_targets(cfg: RunConfig, model, model_type: str | None = None) -> list[str] | str:
    """The target_modules for LoraConfig: explicit list, preset, or the architecture default; checked against the model."""
    lora = cfg.lora
    if lora.target_modules is not None:
        targets = lora.target_modules
        field = "lora.target_modules"
    elif lora.preset:
        targets = preset_modules(lora.preset)
        field = "lora.preset"
    else:
        targets = preset_modules(preset_for_model_type(model_type or getattr(model.config, "model_type", None)))
        field = "lora.target_modules"
    if targets == "all-linear":
        return "all-linear"
    available = [n for n in linear_module_names(model) if n not in set(head_names(model))]
    missing = [t for t in targets if t not in available]
    if missing:
        from loratui.core.fmt import shorten_list

        raise ModelError(f"{shorten_list(missing)} not in this model", field=field,
                         hint=f"this model's linear layers: {shorten_list(available, 12)}")
    return list(targets)


def choose_precision(cfg: RunConfig) -> str:
    """fp32 | bf16 | fp16, from the config and the hardware."""
    import torch

    p = cfg.train.precision
    cuda = torch.cuda.is_available()
    if p == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if p in ("bf16", "fp16") and not cuda:
        if p == "bf16":
            return "bf16"  # CPU autocast supports bf16
        raise ConfigError("fp16 needs a CUDA GPU", field="train.precision", hint="use auto, fp32 or bf16 on CPU")
    return p


def weight_dtype(cfg: RunConfig, precision: str):
    """dtype of the (unquantized) base weights."""
    import torch

    if cfg.model.dtype != "auto":
        return getattr(torch, cfg.model.dtype)
    # full fine-tuning keeps fp32 master weights under mixed precision; a frozen LoRA base is fine in 16 bits
    if cfg.method.kind in ("lora",) and precision == "bf16" and torch.cuda.is_available():
        return torch.bfloat16
    if cfg.method.kind in ("lora",) and precision == "fp16":
        return torch.float16
    return torch.float32


def quantization_config(cfg: RunConfig, fsdp: bool = False):
    """bitsandbytes settings. Under FSDP the 4-bit weights are stored in the compute dtype, so FSDP can shard them
    like the other (bf16) parameters (the PEFT/bitsandbytes FSDP-QLoRA recipe)."""
    import torch
    from transformers import BitsAndBytesConfig

    if cfg.method.kind == "qlora":
        compute = getattr(torch, cfg.method.compute_dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.method.quant_type,
            bnb_4bit_use_double_quant=cfg.method.double_quant,
            bnb_4bit_compute_dtype=compute,
            **({"bnb_4bit_quant_storage": compute} if fsdp else {}),
        )
    if cfg.method.kind == "lora-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_tokenizer(cfg: RunConfig, resolved: ResolvedModel | None = None):
    from transformers import AutoTokenizer

    resolved = resolved or resolve_model(cfg.model)
    try:
        return AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=cfg.model.trust_remote_code,
                                             **resolved.kwargs())
    except Exception as err:  # noqa: BLE001
        raise _hub_error(resolved, err) from None


def load_model(cfg: RunConfig, resolved: ResolvedModel, precision: str, label_names: list[str] | None = None,
               attn_implementation: str | None = None, fsdp: bool = False):
    """Load the base model as the method needs it (quantized for qlora / lora-8bit)."""
    import torch

    cls = auto_class(cfg.model.task)
    kwargs: dict[str, Any] = dict(trust_remote_code=cfg.model.trust_remote_code, **resolved.kwargs())
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    qc = quantization_config(cfg, fsdp) if cfg.quantized else None
    if qc is not None:
        kwargs["quantization_config"] = qc
        if not fsdp:  # FSDP places (and shards) the weights itself
            kwargs["device_map"] = {"": torch.cuda.current_device()}
        kwargs["dtype"] = getattr(torch, cfg.method.compute_dtype)
    else:
        kwargs["dtype"] = weight_dtype(cfg, precision)
    if cfg.model.task == "seq-cls":
        kwargs["num_labels"] = cfg.model.num_labels
        if label_names and len(label_names) == cfg.model.num_labels:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    if resolved.local:
        check_pickle(resolved.path, cfg.model.allow_pickle)
    if not cfg.model.allow_pickle and not resolved.gguf_file:
        kwargs["use_safetensors"] = True  # a hub repo with only .bin files is refused too
    try:
        model = cls.from_pretrained(resolved.path, **kwargs)
    except Exception as err:
        if is_unsafe_pickle_error(err):
            raise unsafe_pickle_error(resolved.path) from None
        if isinstance(err, (ValueError, OSError, EnvironmentError)):
            raise _hub_error(resolved, err) from None
        raise
    if getattr(model.config, "pad_token_id", None) is None and getattr(model.config, "eos_token_id", None) is not None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


def upcasts_frozen_weights(cfg: RunConfig, *, lean: bool, fsdp: bool = False) -> bool:
    """Whether a quantized base's non-quantized weights (embeddings, norms, head) go to fp32, as
    prepare_model_for_kbit_training does: not under FSDP (one dtype a shard) nor with lean activations and a bf16
    compute dtype (fp16 keeps the upcast: it overflows where bf16 does not)."""
    return cfg.quantized and not (fsdp or lean and cfg.method.compute_dtype == "bfloat16")


def apply_method(cfg: RunConfig, model, *, gradient_checkpointing: bool = False, fsdp: bool = False,
                 lean: bool = False):
    """Attach LoRA (or freeze for head-only; nothing for full). Returns the model to train.

    Under FSDP a 4-bit base is not "prepared" for k-bit training (that upcasts norms to fp32, and FSDP needs one
    dtype per shard); its inputs are made to require grads for checkpointing instead (as TRL does for sharded QLoRA).
    ``lean`` (train.lean_activations) with a bf16 compute dtype skips the fp32 upcast too: the norms, embeddings
    and head stay bf16, so the residual stream and everything kept from it is half the size (an fp16 compute dtype
    keeps the upcast: fp16 overflows where bf16 does not).
    """
    kind = cfg.method.kind
    if kind == "full":
        return model
    if kind == "head-only":
        heads = head_names(model)
        if not heads:
            raise ModelError("this model has no classification head to train", field="method.kind",
                             hint="use lora or full")
        for name, param in model.named_parameters():
            param.requires_grad = name.split(".")[0] in heads
        return model
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if cfg.quantized and not upcasts_frozen_weights(cfg, lean=lean, fsdp=fsdp):
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    elif cfg.quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.method.start_from:  # continue an adapter (its own LoRA settings) instead of a new one
        from loratui.train.start_adapter import load_start_adapter

        return load_start_adapter(cfg, model)
    targets = resolve_targets(cfg, model)
    model_type = getattr(model.config, "model_type", "")
    lora_config = LoraConfig(
        task_type=TaskType(PEFT_TASK_TYPES[cfg.model.task]),
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias=cfg.lora.bias,
        use_rslora=cfg.lora.rslora,
        use_dora=cfg.lora.dora,
        modules_to_save=cfg.lora.modules_to_save or None,
        fan_in_fan_out=model_type == "gpt2",
    )
    try:
        return get_peft_model(model, lora_config)
    except ValueError as err:
        raise ModelError(str(err).splitlines()[0][:200], field="lora.target_modules",
                         hint="pick layers from the model's own linear layers") from None


def count_trainable(model) -> tuple[int, int]:
    """(trainable, total) exactly as peft's print_trainable_parameters reports them, less the adapters the model
    holds but does not run: TRL's frozen reference copy of a continued adapter (dpo, kto) is no part of the model
    that trains or is saved, so a continued adapter's share is its SFT run's."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        idle = set(getattr(model, "peft_config", None) or {}) - set(getattr(model, "active_adapters", None) or [])
        for name, p in model.named_parameters() if idle else ():
            if idle & set(name.split(".")):  # peft keys an adapter's weights by its name: lora_A.ref.weight
                total -= p.numel()
                trainable -= p.numel() if p.requires_grad else 0
        return trainable, total
    # full and head-only models are never quantized: plain sums match peft's count
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


__all__ = [
    "ALIASES", "PRESETS", "ResolvedModel", "resolve_model", "load_model_config", "build_meta_model",
    "list_linear_layers", "resolve_targets", "load_model", "load_tokenizer", "apply_method", "count_trainable",
    "model_max_length", "choose_precision", "LORA_METHODS", "upcasts_frozen_weights",
]
