"""Exact parameter counts and a memory estimate, before loading any weights.

Parameter counts come from the real architecture built on the meta device with the real peft wrapping, so they are
what ``print_trainable_parameters`` reports. The memory estimate models the run the engine will actually start: the
device and precision it will use (a CUDA GPU: bf16, what NVML shows for the process; no GPU: fp32, host RAM), the
speed levers ``speed.resolve`` turns on there (packing, attention kernel, Liger kernels, fused AdamW), and the tokens
the largest step really holds, measured on a sample of the training data with the run's tokenizer. Per component:

- weights: each parameter at the bytes the engine will hold it in (fp32 master weights for full fine-tuning,
  16-bit frozen base for LoRA on a bf16 GPU, 4-bit NF4/FP4 + quantization constants for QLoRA, int8 for lora-8bit;
  ``prepare_model_for_kbit_training`` upcasts the non-quantized parameters (embeddings, norms, heads) to fp32);
- gradients and optimizer states for the trainable parameters only (AdamW: 8 bytes, 8-bit AdamW: 2 bytes,
  Adafactor: factored row+column statistics, computed from the real shapes);
- activations saved for backward, per token and layer, from the layer shapes, the dtype each tensor really has
  (a quantized base casts its outputs back to the fp32 residual stream), which weights need gradients (a frozen
  linear layer does not keep its input), which kernels run (Liger's RMSNorm and SwiGLU keep less than the eager
  ones; SDPA over packed rows materializes a block mask per layer, the varlen kernel none), plus the loss: the
  logits and their fp32 copies and gradients (vocabulary x tokens, often the largest item), or, with Liger's fused
  linear cross-entropy, only a chunk and the hidden-state gradient. Gradient checkpointing keeps each layer's input
  plus one layer's activations. Evaluation (no gradients, full logits even with Liger) is estimated too: the larger
  of the two peaks counts;
- tokens a step holds: packed, the sum over the batch at the size the largest of the planned steps reaches (drawn
  from the sampled example lengths, with margin: the random order decides it); padded, batch x the longest example (capped at
  ``max_length``, rounded up as the collator pads). Data that can't be read cheaply (a hub dataset): max_length,
  and the report says so;
- overhead: on a GPU the CUDA context (what NVML shows beyond torch's allocator) plus the caching allocator's slack
  over its peak with expandable segments (the engine sets them); on a CPU the Python process itself (torch,
  transformers, datasets loaded) plus malloc slack. Calibrated against measured peaks (tests/test_estimate.py,
  bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from loratui.core.config import RunConfig
from loratui.core.devices import rows_this_machine_runs
from loratui.train.activations import (  # noqa: F401 - re-exported
    HEAD_BYTES_EXTRA, OFFLOAD_KEPT, Levers, Shape, _activation_bytes_per_token, model_shape,
)
from loratui.train.step_tokens import (  # noqa: F401 - re-exported: the estimate's token counting
    PACK_MARGIN, StepTokens, eval_batch_tokens, eval_lengths, sample_lengths, step_tokens,
)

GiB = 1024**3
CUDA_CONTEXT = int(0.75 * GiB)  # CUDA context, cuBLAS workspace, kernel modules: NVML minus torch's peak measured
# 0.77-0.88 GiB on an H200 with torch 2.11 for runs from a 22M-parameter MiniLM to an 8B QLoRA
ALLOC_SLACK = 0.05  # what the caching allocator (expandable segments) holds over its peak allocated
HOST_BASE = int(0.8 * GiB)  # a CPU run's process before the model: Python, torch, transformers, datasets (0.5 GiB RSS), data
HOST_SLACK = 0.10  # malloc's slack over the tensors on a CPU run

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
    basis: str = ""  # "estimated for CPU, fp32, host memory" and the like
    tokens_note: str = ""  # how the tokens a step holds were worked out
    gathered: int = 0  # FSDP: the units gathered whole at once (the root's weights and two decoder layers)
    sharded: "MemoryRow | None" = None  # this row as FSDP holds it (weights, grads, optimizer to split over cards)

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.gathered + self.overhead

    def per_card(self, strategy: str, cards: int) -> int:
        """Bytes each card holds: one process or DDP a whole replica (``total``); FSDP its share of the weights,
        gradients and optimizer states, its own activations, the units it gathers whole, and its overhead."""
        if strategy != "fsdp" or cards <= 1:
            return self.total
        s = self.sharded or self
        static = (s.weights + s.grads + s.optimizer) / cards
        slack = ALLOC_SLACK if self.sharded is not None else 0  # a sharded row's overhead leaves the static share out
        return int(static * (1 + slack) + s.activations + s.gathered + s.overhead)


@dataclass
class MemoryReport:
    rows: list[MemoryRow]
    tokens_per_step: int
    precision: str
    device: str
    basis: str = ""
    tokens_note: str = ""

    def format_table(self) -> str:
        head = f"{'':<26}{'weights':>9}{'grads':>8}{'optim':>8}{'activ':>8}{'other':>8}{'total':>9}"
        lines = [head]
        rows = rows_this_machine_runs(self.rows, gpu=self.device != "CPU")  # as Setup shows them
        for r in rows:
            lines.append(f"{r.label:<26}" + "".join(
                f"{gib(v):>{w}}" for v, w in ((r.weights, 9), (r.grads, 8), (r.optimizer, 8),
                                                (r.activations, 8), (r.overhead, 8), (r.total, 9))))
        qlora_here = self.device == "CPU" and "qlora" in self.rows[0].label.lower()  # this config cannot start
        lines.append(f"GiB; {self.basis or f'{self.precision} on {self.device}'}"
                     + ("; QLoRA needs an NVIDIA GPU" if len(rows) < len(self.rows) or qlora_here else ""))
        lines.append(f"{self.tokens_per_step:,} tokens in the largest step ({self.tokens_note})")
        return "\n".join(lines)


def gib(n: float) -> str:
    v = n / GiB
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def comparison_config(cfg: RunConfig, kind: str) -> RunConfig:
    """``cfg`` trained another way, for the rows beside it: full fine-tuning trains every weight with plain AdamW
    and continues no adapter (``method.start_from`` is a LoRA setting: a full copy of it does not validate)."""
    other = cfg.model_copy(deep=True)
    if kind == "full":
        other.method.start_from = None
        other.train.optimizer = "adamw_torch"
    other.method.kind = kind
    return other


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

def _levers(cfg: RunConfig, cuda: bool, model_type: str | None) -> Levers:
    from loratui.train import models, speed

    if cuda:
        import torch

        if torch.cuda.is_available():
            precision = models.choose_precision(cfg)
        else:  # estimating for a GPU from a machine without one (bench, tests): the engine's choice on a bf16 GPU
            precision = "bf16" if cfg.train.precision == "auto" else cfg.train.precision
    else:
        precision = "fp32" if cfg.train.precision == "auto" else cfg.train.precision
        if precision == "fp16":
            precision = "fp32"  # refused at launch; estimate what a CPU could run
    sp = speed.resolve(cfg, cuda, model_type)
    return Levers(cuda=cuda, precision=precision, packing=sp.packing, attention=sp.attention, liger=sp.liger,
                  optimizer=sp.optimizer, lean=sp.lean, lean_mlp=sp.lean_mlp, fused=sp.fused_lora,
                  offload=cuda and cfg.train.activation_offload == "on", host_embedding=sp.embedding_offload)


def estimate_memory(cfg: RunConfig, *, compare: bool = True, cuda: bool | None = None) -> MemoryReport:
    """Memory for this config, and (``compare``) full fine-tuning and QLoRA beside it.

    ``cuda``: estimate for a CUDA GPU (True) or the CPU (False); default: what this machine has, which is where the
    run will go.
    """
    import torch

    from loratui.train import models, speed

    if cuda is None:
        cuda = torch.cuda.is_available()
    model_config = models.load_model_config(cfg)
    lev = _levers(cfg, cuda, getattr(model_config, "model_type", None))
    if cuda:
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "a CUDA GPU"
        basis = f"estimated for {device}, {lev.precision}, GPU memory (as nvidia-smi shows it)"
    else:
        device = "CPU"
        basis = f"estimated for CPU, {lev.precision}, host memory"
    shape = model_shape(model_config, cfg.model.task)
    tokens = step_tokens(cfg, lev.packing)
    variants: list[tuple[str, RunConfig]] = [(f"this config ({cfg.method.kind})", cfg)]
    if compare:
        for kind, label in (("full", "full fine-tuning"), ("qlora", "QLoRA 4-bit"), ("lora", "LoRA 16-bit")):
            if cfg.method.kind != kind and not (kind == "lora" and cfg.method.kind != "full"):
                variants.append((label, comparison_config(cfg, kind)))
    rows = []
    for label, variant in variants:
        meta = models.build_meta_model(variant, model_config)
        if variant is cfg:
            vlev = lev
        else:
            vlean = speed.lean_activations(variant, lev.cuda)
            vlev = Levers(**{**lev.__dict__, "optimizer": _optimizer(variant, cuda), "lean": vlean,
                             "lean_mlp": speed.lean_mlp(variant, vlean)})
        row = _estimate_row(label, variant, meta, shape, vlev, tokens)
        row.basis, row.tokens_note = basis, tokens.note
        if cuda:  # the same row under FSDP (Setup shows it per card when the run shards over several)
            row.sharded = _estimate_row(label, variant, models.build_meta_model(variant, model_config), shape, vlev,
                                        tokens, fsdp=True)
        rows.append(row)
    return MemoryReport(rows=rows, tokens_per_step=tokens.train, precision=lev.precision, device=device,
                        basis=basis, tokens_note=tokens.note)


def _optimizer(cfg: RunConfig, cuda: bool) -> str:
    opt = cfg.train.optimizer
    return ("adamw_torch_fused" if cuda else "adamw_torch") if opt == "auto" else opt


def _layer_index(parts: list[str]) -> int | None:
    """The decoder layer a parameter belongs to (``...layers.7.mlp...``: 7), None outside the layers."""
    for a, b in zip(parts, parts[1:]):
        if a in ("layers", "h", "layer", "blocks") and b.isdigit():
            return int(b)
    return None


def _estimate_row(label: str, cfg: RunConfig, meta_model, shape: Shape, lev: Levers, tokens: StepTokens,
                  *, fsdp: bool = False, prepared: tuple | None = None) -> MemoryRow:
    """One row of the estimate; ``fsdp``: as FSDP holds it on each card (weights, gradients and optimizer states
    whole here, for the caller to split; parameters gathered in the compute dtype, so no autocast copies of them and
    a 16-bit residual stream; the root unit and two decoder layers gathered at once). ``prepared``: what
    ``_meta_trainable`` made of ``meta_model`` for this method and LoRA settings already (read, not changed)."""
    import torch.nn as nn

    from loratui.train import models, speed

    kind = cfg.method.kind
    precision = lev.precision
    e = 2 if precision in ("bf16", "fp16") else 4
    heads = set(models.head_names(meta_model))
    wrapped, trainable, _total = prepared or _meta_trainable(cfg, meta_model)
    quantized = kind in ("qlora", "lora-8bit")
    weights_16 = models_weight_16bit(cfg, precision, lev.cuda)
    lean = lev.lean
    upcast = models.upcasts_frozen_weights(cfg, lean=lean, fsdp=fsdp)
    mixed = fsdp and e == 2  # FSDP's mixed precision gathers every parameter in the compute dtype
    unit_bytes: dict[int | None, int] = {}  # what FSDP gathers of each decoder layer (None: the root unit)

    weights = 0
    trainable_linear: set[str] = set()
    lora_width = 0  # summed input width of the adapted layers (LoRA dropout copies each input)
    grads = optimizer = 0
    cast_cache = 0  # autocast's 16-bit copies of fp32 weights that train (kept for the step)
    opt = lev.optimizer
    seen: set[int] = set()
    int8_width = 0  # summed input width of the layers an 8-bit base quantizes
    adapted: set[str] = set()  # LoRA-adapted projections (lean: each keeps its input, shared with its siblings)
    for name, module in wrapped.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            adapted.add(name.split(".")[-1])
            if cfg.lora.dropout > 0:
                base = module.base_layer
                lora_width += getattr(base, "in_features", None) or base.weight.shape[0]
        if kind == "lora-8bit" and isinstance(module, nn.Linear) and "lora_" not in name \
                and not any(p in heads for p in name.split(".")[:3]):
            int8_width += module.in_features
    if lev.host_embedding:  # train.embedding_offload: the table waits in host memory where the model allows it
        from loratui.train.host_embedding import why_not

        if why_not(wrapped) is None:
            seen.add(id(wrapped.get_input_embeddings().weight))
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
        quant_bytes = None  # a quantized weight's bytes (stored and gathered as such)
        if kind == "qlora" and is_quantizable:
            blocks = n / 64
            const = blocks * (1 + 4 / 256) if cfg.method.double_quant else blocks * 4
            quant_bytes = int(n * 0.5 + const)
        elif kind == "lora-8bit" and is_quantizable:
            quant_bytes = n + 4 * param.shape[0]
        if quant_bytes is not None:
            weights += quant_bytes
        elif is_lora or kind in ("full", "head-only") and param.requires_grad:
            weights += 4 * n  # adapters and trained weights in fp32
        elif cfg.quantized:
            weights += (4 if upcast else 2) * n
        elif kind == "full":
            weights += 4 * n
        else:
            weights += (2 if weights_16 else 4) * n
        if fsdp:
            unit = _layer_index(parts)
            unit_bytes[unit] = unit_bytes.get(unit, 0) + (quant_bytes if quant_bytes is not None else e * n)
        if param.requires_grad:
            grads += 4 * n
            if opt == "adafactor":
                optimizer += 4 * (sum(param.shape) if param.dim() == 2 else n)
            else:
                optimizer += OPTIMIZER_BYTES.get(opt, 8) * n
            if param.dim() == 2 and not is_lora:
                trainable_linear.add(parts[-2] if parts[-1] in ("weight", "bias") else parts[-1])
                if e == 2 and not mixed:
                    cast_cache += 2 * n
    full = kind == "full"
    # the residual stream is fp32 when the embeddings are (fp32 weights, full fine-tuning's master weights, or a
    # quantized base upcast by prepare_model_for_kbit_training); bitsandbytes returns its outputs in that dtype
    resid = e if mixed else 4 if (upcast or full or not weights_16 and not quantized) else e
    proj = resid if quantized else e
    if (lean or lev.fused) and not cfg.train.gradient_checkpointing and cfg.lora.dropout > 0:
        # no dropped copies or masks: each adapted projection keeps its input itself (q, k and v one tensor), in
        # lean activations' adapters or in the fused projection
        lora_width = 0
        trainable_linear = trainable_linear | adapted
        if shape.gated and lev.lean_mlp:
            # a gated MLP's down projection rebuilds its input from the activation's kept inputs (lean_gated_mlps)
            trainable_linear = trainable_linear - {"down_proj"}
    masked = lev.attention in ("sdpa", "eager")  # a mask (padding or packed rows): transformers repeats keys/values
    per_token, head, work = _activation_bytes_per_token(
        shape, e, trainable_linear, lora_width / max(shape.layers, 1), full=full,
        checkpointing=cfg.train.gradient_checkpointing, int8_width=int8_width / max(shape.layers, 1),
        resid=resid, proj=proj, liger=lev.liger, fused_ce=speed.loss_chunk(cfg, lev.liger),
        attention=lev.attention, masked=masked, ckpt_layers=lev.ckpt_layers,
        offload=lev.offload)
    train_act = tokens.train * (per_token + head + work) + cast_cache
    if shape.causal and resid == 4 and e == 2 and not full:
        # a frozen fp32 LM head (fp32 weights, or upcast for a quantized base) is cast to 16 bits for its matmul
        # under autocast while every activation is held (each Liger chunk too): one transient copy
        train_act += e * shape.vocab * shape.hidden
    if cfg.method.objective in ("dpo", "kto"):
        # the reference pass (TRL: after the policy's forward, its activations held): the reference's logits and
        # their fp32 log-sum-exp over both answers of every pair. Measured on the CPU: bench/RESULTS.md, round 6
        train_act += tokens.train * shape.vocab * (e + 4)
    if shape.causal and lev.packing and lev.attention in ("sdpa", "eager"):
        # SDPA over a packed row: transformers builds a block mask over the whole row, and the kernel keeps a
        # 16-bit copy of it per layer (quadratic in the packed length: why varlen is the default)
        train_act += shape.layers * 2 * tokens.train ** 2
    if lev.attention == "eager":  # eager attention keeps the probabilities: heads x length^2 per row and layer
        rows_len = tokens.train if lev.packing else tokens.train // max(cfg.train.batch_size, 1)
        rows_n = 1 if lev.packing else cfg.train.batch_size
        train_act += shape.layers * rows_n * shape.heads * rows_len ** 2 * 2 * e
    # evaluation: no gradients, one layer's activations at a time, and the full logits (Liger only fuses training)
    # (16-bit logits returned, their fp32 copy and its log-softmax)
    eval_head = (e + (8 if e == 2 else 4)) * shape.vocab if shape.causal else 8 * shape.vocab
    eval_act = tokens.eval * (eval_head + 4 * resid * shape.hidden + 3 * proj * shape.intermediate)
    if shape.causal and resid == 4 and e == 2 and not full:
        eval_act += e * shape.vocab * shape.hidden
    activations = int(max(train_act, eval_act if cfg.data.validation_fraction or cfg.data.validation_file else 0))
    static = weights + grads + optimizer
    if fsdp:  # the static share's slack is added per card (MemoryRow.per_card)
        gathered = unit_bytes.get(None, 0) + 2 * max((b for u, b in unit_bytes.items() if u is not None), default=0)
        overhead = CUDA_CONTEXT + int(ALLOC_SLACK * (activations + gathered))
        return MemoryRow(label, weights, grads, optimizer, activations, overhead, trainable=trainable,
                         gathered=gathered)
    if lev.cuda:
        overhead = CUDA_CONTEXT + int(ALLOC_SLACK * (static + activations))
    else:
        overhead = HOST_BASE + int(HOST_SLACK * (static + activations))
    return MemoryRow(label, weights, grads, optimizer, activations, overhead, trainable=trainable)


def models_weight_16bit(cfg: RunConfig, precision: str, cuda: bool = True) -> bool:
    """Whether the (unquantized) base is held in 16 bits, as models.weight_dtype decides on that device."""
    if cfg.model.dtype in ("bfloat16", "float16"):
        return True
    if cfg.model.dtype == "float32":
        return False
    return cfg.method.kind == "lora" and (precision == "fp16" or precision == "bf16" and cuda)


def rule_of_thumb_gb(n_params: int) -> float:
    """The tutorial's estimate for full fine-tuning in fp32: weights x (1 + 1 + 2 + 2). Shown for comparison."""
    return n_params * 4 * 6 / 1e9
