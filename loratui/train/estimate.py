"""Exact parameter counts and a memory estimate, before loading any weights.

Parameter counts come from the real architecture built on the meta device with the real peft wrapping, so they are
what ``print_trainable_parameters`` reports. The memory estimate counts, per component:

- weights: each parameter at the bytes the engine will hold it in (fp32 master weights for full fine-tuning,
  16-bit frozen base for LoRA on a bf16 GPU, 4-bit NF4/FP4 + quantization constants for QLoRA, int8 for lora-8bit;
  ``prepare_model_for_kbit_training`` upcasts the non-quantized parameters (embeddings, norms, heads) to fp32);
- gradients and optimizer states for the trainable parameters only (AdamW: 8 bytes, 8-bit AdamW: 2 bytes,
  Adafactor: factored row+column statistics, computed from the real shapes);
- activations saved for backward, per token and layer, from the layer shapes and which weights need gradients
  (a frozen linear layer does not keep its input), plus the logits and loss buffers (vocabulary x tokens in fp32,
  often the largest single item), for ``batch_size x max_length`` tokens (padded worst case); gradient
  checkpointing keeps only each layer's input plus one layer's activations;
- overhead: the CUDA context and allocator slack (calibrated against measured peaks, see bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from loratui.core.config import RunConfig

GiB = 1024**3
CUDA_CONTEXT = int(0.45 * GiB)  # CUDA context + cuBLAS workspace seen by NVML but not by torch's allocator
ALLOC_SLACK = 0.08  # caching-allocator fragmentation over the peak allocated

OPTIMIZER_BYTES = {
    "adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,
    "adamw_8bit": 2, "paged_adamw_8bit": 2, "sgd": 0,
}


@dataclass
class ParamCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {self.percent:.4f}"


@dataclass
class MemoryRow:
    label: str
    weights: int
    grads: int
    optimizer: int
    activations: int
    overhead: int
    trainable: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.overhead


@dataclass
class MemoryReport:
    rows: list[MemoryRow]
    tokens_per_step: int
    precision: str
    device: str

    def format_table(self) -> str:
        head = f"{'':<26}{'weights':>9}{'grads':>8}{'optim':>8}{'activ':>8}{'other':>8}{'total':>9}"
        lines = [head]
        for r in self.rows:
            lines.append(f"{r.label:<26}" + "".join(
                f"{gib(v):>{w}}" for v, w in ((r.weights, 9), (r.grads, 8), (r.optimizer, 8),
                                                (r.activations, 8), (r.overhead, 8), (r.total, 9))))
        lines.append(f"GiB; {self.tokens_per_step:,} tokens a step ({self.precision} on {self.device})")
        return "\n".join(lines)


def gib(n: float) -> str:
    v = n / GiB
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


# -- parameter counts ---------------------------------------------------------------------------------------------

def _meta_trainable(cfg: RunConfig, meta_model) -> tuple[object, int, int]:
    """Apply the method to a meta model (quantized methods counted as their unquantized twin, as peft reports)."""
    from loratui.train import models

    counting = cfg
    if cfg.quantized:
        counting = cfg.model_copy(deep=True)
        counting.method.kind = "lora"
    import torch

    with torch.device("meta"):  # the LoRA matrices too: never real tensors (r=8000 once took 3.8 GB and 103 s)
        wrapped = models.apply_method(counting, meta_model)
    trainable, total = models.count_trainable(wrapped)
    return wrapped, trainable, total


def count_params(cfg: RunConfig) -> ParamCount:
    from loratui.train import models

    _, trainable, total = _meta_trainable(cfg, models.build_meta_model(cfg))
    return ParamCount(trainable, total)


# -- memory -------------------------------------------------------------------------------------------------------

@dataclass
class Shape:
    layers: int
    hidden: int
    kv_hidden: int
    intermediate: int
    vocab: int
    gated: bool  # SwiGLU-style MLP (gate, up, down)
    causal: bool


def model_shape(model_config, task: str) -> Shape:
    c = model_config
    get = lambda *names, default=None: next((getattr(c, n) for n in names if getattr(c, n, None)), default)  # noqa: E731
    hidden = get("hidden_size", "n_embd", "d_model", "dim")
    heads = get("num_attention_heads", "n_head", "n_heads", default=1)
    kv_heads = get("num_key_value_heads", default=heads)
    head_dim = get("head_dim", default=hidden // heads)
    inter = get("intermediate_size", "n_inner", "ffn_dim", "hidden_dim", default=4 * hidden)
    return Shape(
        layers=get("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
        hidden=hidden,
        kv_hidden=kv_heads * head_dim,
        intermediate=inter,
        vocab=get("vocab_size", default=0) if task == "causal-lm" else get("num_labels", default=2),
        gated=getattr(c, "hidden_act", "") in ("silu", "swiglu") or getattr(c, "model_type", "") in (
            "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"),
        causal=task == "causal-lm",
    )


def _activation_bytes_per_token(shape: Shape, e: int, trainable_linear: set[str], lora_width: float,
                                full: bool, checkpointing: bool, int8_width: float = 0) -> tuple[float, float]:
    """(bytes per token saved across all layers, bytes per token for the head/loss)."""
    h, kv, i = shape.hidden, shape.kv_hidden, shape.intermediate

    def needs(*names: str) -> bool:
        return full or any(n in trainable_linear for n in names)

    # norms: fp32 copy of the input for the variance (+ the 16-bit normed output when the norm weight trains)
    per_layer = 2 * (4 * h + (e * h if full else 0))
    # attention: q, k, v and output kept by SDPA, plus the inputs of projections whose weights train
    per_layer += e * (2 * h + 2 * kv)
    per_layer += e * h if needs("q_proj", "k_proj", "v_proj", "query", "key", "value", "c_attn") else 0
    per_layer += e * h if needs("o_proj", "dense", "c_proj", "out_proj") else 0
    # MLP: activation input, gated product inputs, and the inputs of trainable projections
    if shape.gated:
        per_layer += 3 * e * i  # silu(gate) input, and both factors of the product
        per_layer += e * h if needs("gate_proj", "up_proj") else 0
        per_layer += e * i if needs("down_proj") else 0
    else:
        per_layer += e * i  # GELU input
        per_layer += e * h if needs("fc1", "intermediate", "c_fc", "dense") else 0
        per_layer += e * i if needs("fc2", "output", "c_proj", "dense") else 0
        per_layer += 2 * h  # dropout masks (encoders)
    # LoRA dropout makes its own copy of each adapted input (plus a 1-byte mask)
    per_layer += (e + 1) * lora_width
    # bitsandbytes int8 matmuls keep their own fp16 copy and int8 copy of every input for backward
    per_layer += (2 + 1) * int8_width
    if checkpointing:
        saved = shape.layers * e * h + per_layer  # layer inputs + one layer recomputed at a time
    else:
        saved = shape.layers * per_layer
    # logits (16-bit) + fp32 upcast + log-softmax kept for backward; classifiers: tiny
    head = (e + 8) * shape.vocab if shape.causal else 8 * shape.vocab
    return saved, head


def estimate_memory(cfg: RunConfig, *, compare: bool = True) -> MemoryReport:
    """Memory for this config, and (``compare``) full fine-tuning and QLoRA beside it."""
    import torch

    from loratui.train import models

    model_config = models.load_model_config(cfg)
    precision = models.choose_precision(cfg) if cfg.train.precision != "auto" or torch.cuda.is_available() else "bf16"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "a CUDA GPU (estimated)"
    shape = model_shape(model_config, cfg.model.task)
    tokens = cfg.train.batch_size * cfg.data.max_length
    variants: list[tuple[str, RunConfig]] = [(f"this config ({cfg.method.kind})", cfg)]
    if compare:
        for kind, label in (("full", "full fine-tuning"), ("qlora", "QLoRA 4-bit"), ("lora", "LoRA 16-bit")):
            if cfg.method.kind != kind and not (kind == "lora" and cfg.method.kind != "full"):
                other = cfg.model_copy(deep=True)
                other.method.kind = kind
                if kind == "full":
                    other.train.optimizer = "adamw_torch"
                variants.append((label, other))
    rows = []
    for label, variant in variants:
        meta = models.build_meta_model(variant, model_config)
        rows.append(_estimate_row(label, variant, meta, shape, precision, tokens))
    return MemoryReport(rows=rows, tokens_per_step=tokens, precision=precision, device=device)


def _estimate_row(label: str, cfg: RunConfig, meta_model, shape: Shape, precision: str, tokens: int) -> MemoryRow:
    import torch.nn as nn

    from loratui.train import models

    kind = cfg.method.kind
    e = 2 if precision in ("bf16", "fp16") else 4
    heads = set(models.head_names(meta_model))
    wrapped, trainable, _total = _meta_trainable(cfg, meta_model)

    weights = 0
    trainable_linear: set[str] = set()
    lora_width = 0  # summed input width of the adapted layers (LoRA dropout copies each input)
    grads = optimizer = 0
    opt = cfg.train.optimizer
    seen: set[int] = set()
    int8_width = 0  # summed input width of the layers an 8-bit base quantizes
    for name, module in wrapped.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer") and cfg.lora.dropout > 0:
            base = module.base_layer
            lora_width += getattr(base, "in_features", None) or base.weight.shape[0]
        if kind == "lora-8bit" and isinstance(module, nn.Linear) and "lora_" not in name \
                and not any(p in heads for p in name.split(".")[:3]):
            int8_width += module.in_features
    for name, param in wrapped.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        n = param.numel()
        parts = name.split(".")
        is_lora = "lora_" in name or "modules_to_save" in name
        is_head = any(p in heads for p in parts[:3])
        is_quantizable = param.dim() == 2 and not is_lora and not is_head and "embed" not in name and "wte" not in name \
            and "wpe" not in name and not name.endswith("embeddings.weight")
        if kind == "qlora" and is_quantizable:
            blocks = n / 64
            const = blocks * (1 + 4 / 256) if cfg.method.double_quant else blocks * 4
            weights += int(n * 0.5 + const)
        elif kind == "lora-8bit" and is_quantizable:
            weights += n + 4 * param.shape[0]
        elif is_lora or kind in ("full", "head-only") and param.requires_grad:
            weights += 4 * n  # adapters and trained weights in fp32
        elif cfg.quantized:
            weights += 4 * n  # prepare_model_for_kbit_training upcasts the rest to fp32
        elif kind == "full":
            weights += 4 * n
        else:
            weights += (2 if models_weight_16bit(cfg, precision) else 4) * n
        if param.requires_grad:
            grads += 4 * n
            if opt == "adafactor":
                optimizer += 4 * (sum(param.shape) if param.dim() == 2 else n)
            else:
                optimizer += OPTIMIZER_BYTES.get(opt, 8) * n
            if param.dim() == 2 and not is_lora:
                trainable_linear.add(parts[-2] if parts[-1] in ("weight", "bias") else parts[-1])
    per_token, head = _activation_bytes_per_token(
        shape, e, trainable_linear, lora_width / max(shape.layers, 1), full=kind == "full",
        checkpointing=cfg.train.gradient_checkpointing, int8_width=int8_width / max(shape.layers, 1))
    activations = int(tokens * (per_token + head))
    overhead = CUDA_CONTEXT + int(ALLOC_SLACK * (weights + grads + optimizer + activations))
    return MemoryRow(label, weights, grads, optimizer, activations, overhead, trainable=trainable)


def models_weight_16bit(cfg: RunConfig, precision: str) -> bool:
    if cfg.model.dtype in ("bfloat16", "float16"):
        return True
    if cfg.model.dtype == "float32":
        return False
    return cfg.method.kind == "lora" and precision in ("bf16", "fp16")


def rule_of_thumb_gb(n_params: int) -> float:
    """The tutorial's estimate for full fine-tuning in fp32: weights x (1 + 1 + 2 + 2). Shown for comparison."""
    return n_params * 4 * 6 / 1e9
