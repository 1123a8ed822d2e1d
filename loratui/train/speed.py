"""The fast path: what the engine turns on for speed, decided once from the config and the machine.

Every lever has an off switch in the config (`data.packing`, `train.attention`, `train.liger`, `train.optimizer`,
`train.compile`, `train.lean_activations`, `train.activation_offload`, `train.fused_lora`, `train.cuda_graphs`,
`train.embedding_offload`, `train.wide_loss_chunks`); `auto` turns it on where it is safe: on a CUDA GPU, for causal
LMs. On a CPU nothing changes (padded batches, SDPA, plain AdamW), so CI and the embedded demo behave as before.
bench/NOTES.md says what each lever bought on the lent GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from loratui.core.config import LORA_METHODS, RunConfig
from loratui.core.devices import plan_devices
from loratui.core.errors import ConfigError

#: our name for torch's variable-length (FlashAttention) kernel over packed batches, registered with transformers
VARLEN = "loratui_varlen"


@dataclass(frozen=True)
class Speed:
    packing: bool
    attention: str  # the attn_implementation the model is loaded with
    liger: bool
    optimizer: str  # our optimizer name (engine.OPTIMIZERS maps it to the Trainer's)
    compile: bool | str  # True: the whole model (the Trainer's torch_compile); "regional": each decoder layer
    lean: bool = False  # lean LoRA activations (loratui.train.lean)
    lean_mlp: bool = False  # ... and gated MLPs' down-projection adapters rebuild their input (lean_gated_mlps)
    offload: bool = False  # activations saved for backward go to pinned host memory (TRL's offloader)
    fused_lora: bool = False  # each adapted projection one autograd function (loratui.train.fused_lora)
    cuda_graphs: bool = False  # decoder layers replayed as CUDA graphs (loratui.train.graphs)
    embedding_offload: bool = False  # the input embedding table in host memory (loratui.train.host_embedding)
    wide_loss_chunks: bool = False  # Liger's fused cross-entropy in WIDE_LOSS_CHUNK x its default chunks

    def as_event(self) -> dict:
        return asdict(self)


def varlen_available(cuda: bool) -> bool:
    """torch's varlen attention (FlashAttention kernels) needs a CUDA GPU of compute capability 8.0 or newer."""
    if not cuda:
        return False
    try:
        import torch
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability()[0] >= 8


def liger_available(cuda: bool) -> bool:
    if not cuda:
        return False
    try:
        import liger_kernel.transformers  # noqa: F401 - needs triton, so GPU boxes only
    except Exception:  # noqa: BLE001 - ImportError, or triton failing to find a GPU
        return False
    return True


def liger_supports(model_type: str | None) -> bool:
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # noqa: BLE001
        return False
    return model_type in MODEL_TYPE_TO_APPLY_LIGER_FN


def resolve(cfg: RunConfig, cuda: bool, model_type: str | None = None) -> Speed:
    """The levers this run uses. Explicit choices that cannot work here are one-line errors naming the field."""
    t, causal = cfg.train, cfg.model.task == "causal-lm"
    # TRL's preference trainers pad their pairs (their padding-free path is off since its refactor)
    packing = {"on": True, "off": False}.get(cfg.data.packing, cuda and causal and cfg.method.objective == "sft")
    if packing and not causal:
        raise ConfigError("data.packing applies to causal-lm models only", field="data.packing",
                          hint="set data.packing: auto or off for classification")
    attention = t.attention
    if attention == "auto":
        attention = "varlen" if packing and varlen_available(cuda) else "sdpa"
    elif attention == "varlen":
        if not packing:
            raise ConfigError("train.attention varlen needs packed batches", field="train.attention",
                              hint="set data.packing: on, or train.attention: auto")
        if not varlen_available(cuda):
            raise ConfigError("train.attention varlen needs a CUDA GPU (compute capability 8.0+) and torch>=2.10",
                              field="train.attention", hint="set train.attention: auto")
    elif attention == "flex" and not cuda:
        raise ConfigError("train.attention flex needs a CUDA GPU", field="train.attention",
                          hint="set train.attention: auto")
    liger = t.liger == "on" or (t.liger == "auto" and causal and liger_available(cuda) and liger_supports(model_type))
    if t.liger == "on" and not liger_available(cuda):
        raise ConfigError("train.liger on needs a CUDA GPU and the liger-kernel package", field="train.liger",
                          hint="pip install liger-kernel, or set train.liger: auto")
    optimizer = t.optimizer
    if optimizer == "auto":
        optimizer = "adamw_torch_fused" if cuda else "adamw_torch"
    lean = lean_activations(cfg, cuda)
    fused = fused_lora(cfg, cuda)
    if fused and t.lean_mlp == "on":
        raise ConfigError("train.lean_mlp on needs train.fused_lora: off (a fused projection keeps its input itself)",
                          field="train.lean_mlp", hint="set train.lean_mlp: auto, or train.fused_lora: off")
    offload = t.activation_offload == "on"
    if offload and not cuda:
        raise ConfigError("train.activation_offload on needs a CUDA GPU (it moves activations from the card to host "
                          "memory)", field="train.activation_offload", hint="set train.activation_offload: auto")
    graphs = cuda_graphs(cfg, cuda, packing, attention == "varlen", fused, offload)
    if t.wide_loss_chunks == "on" and not fused_cross_entropy(cfg, liger):
        raise ConfigError("train.wide_loss_chunks on needs Liger's fused cross-entropy (a causal LM with train.liger "
                          "on a CUDA GPU, sft objective)", field="train.wide_loss_chunks",
                          hint="set train.wide_loss_chunks: auto")
    return Speed(packing=packing, attention=VARLEN if attention == "varlen" else attention, liger=liger,
                 optimizer=optimizer, compile=t.compile, lean=lean,
                 lean_mlp=lean_mlp(cfg, lean) and not fused and not graphs, offload=offload, fused_lora=fused,
                 cuda_graphs=graphs, embedding_offload=embedding_offload(cfg, cuda),
                 wide_loss_chunks=loss_chunk(cfg, liger) == WIDE_LOSS_CHUNK)


def embedding_offload(cfg: RunConfig, cuda: bool) -> bool:
    """Whether the input embeddings live in host memory (loratui.train.host_embedding): on only (auto is the memory
    fit's to turn on), for a LoRA method on one CUDA card. Whether the model allows it (a head tied to the table)
    is checked on the model itself."""
    if cfg.train.embedding_offload != "on":
        return False
    why = None
    if not cuda:
        why = "a CUDA GPU (it keeps the table in host memory, away from the card)"
    elif cfg.method.kind not in LORA_METHODS:
        why = "a LoRA method (lora, qlora, lora-8bit): full fine-tuning trains the embeddings"
    elif plan_devices(cfg).world_size > 1:
        why = "one card (several processes each hold their own copy and FSDP shards it)"
    if why:
        raise ConfigError(f"train.embedding_offload on needs {why}", field="train.embedding_offload",
                          hint="set train.embedding_offload: auto")
    return True


def fused_cross_entropy(cfg: RunConfig, liger: bool) -> bool:
    """Liger's fused linear cross-entropy: with Liger, for sft only (TRL's preference trainers compute their
    log-probabilities in chunks of their own). The engine's Trainer arguments and the estimate both read this."""
    return liger and cfg.method.objective == "sft"


#: Liger's ``chunk_mem_const`` with train.wide_loss_chunks: logits chunks of about 8 hidden states a token (2,048
#: tokens on the Llama-3-8B shape, 1,024 on the 1B: 1B LoRA +7% tokens/s, bench/RESULTS.md round 12); Liger's 1
#: makes 256- and 128-token chunks whose head matmuls ran at 485-765 TFLOP/s (round 10)
WIDE_LOSS_CHUNK = 8


def loss_chunk(cfg: RunConfig, liger: bool) -> int:
    """Liger's chunk multiplier for this run's fused cross-entropy: 0 without it, WIDE_LOSS_CHUNK with
    train.wide_loss_chunks on (auto is the memory fit's to turn on), else Liger's 1. The estimate reads this."""
    if not fused_cross_entropy(cfg, liger):
        return 0
    return WIDE_LOSS_CHUNK if cfg.train.wide_loss_chunks == "on" else 1


def widen_loss_chunks(chunk: int = WIDE_LOSS_CHUNK) -> None:
    """Liger's fused linear cross-entropy in ``chunk`` x its default chunks, for this process. Liger takes
    ``chunk_mem_const`` as an argument but transformers' integration passes none, and ``LigerForCausalLMLoss`` calls
    the function through its module: that name is bound to the same function with the wider default."""
    import functools

    import liger_kernel.transformers.functional as F

    fn = F.liger_fused_linear_cross_entropy
    if getattr(fn, "keywords", {}).get("chunk_mem_const") != chunk:
        F.liger_fused_linear_cross_entropy = functools.partial(getattr(fn, "func", fn), chunk_mem_const=chunk)


def cuda_graphs(cfg: RunConfig, cuda: bool, packing: bool, varlen: bool, fused: bool, offload: bool) -> bool:
    """Whether decoder layers replay as CUDA graphs (loratui.train.graphs). Graphs need fixed shapes (packed rows
    padded to buckets, the varlen kernel's boundaries), no host work inside a layer (no fused LoRA or recomputed
    dropout drawing from the generator's state), one process. With gradient checkpointing every layer is
    checkpointed by the graphs themselves (loratui.train.graphs_ckpt), and activation offload moves those
    checkpoints only. auto is decided by
    the memory fit (loratui.train.fit), which asks for on only where this allows it."""
    t = cfg.train
    if t.cuda_graphs != "on":
        return False
    why = None
    if not cuda:
        why = "a CUDA GPU"
    elif cfg.method.kind not in LORA_METHODS:
        why = "a LoRA method (lora, qlora, lora-8bit)"
    elif not (packing and varlen):
        why = "packed batches with varlen attention (data.packing and train.attention: auto)"
    elif t.compile or fused:
        why = "train.compile and fused_lora off"
    elif offload and not t.gradient_checkpointing:
        why = "gradient checkpointing with train.activation_offload (the graphs offload the layers' inputs only)"
    elif cfg.method.objective != "sft":
        why = "the sft objective"
    elif plan_devices(cfg).world_size > 1:  # the launcher's own plan (train.gpus auto on several cards counts)
        why = "one card"
    if why:
        raise ConfigError(f"train.cuda_graphs on needs {why}", field="train.cuda_graphs",
                          hint="set train.cuda_graphs: auto")
    return True


def fused_lora(cfg: RunConfig, cuda: bool) -> bool:
    """Whether adapted projections run fused (loratui.train.fused_lora): LoRA methods, not under compile (dynamo
    would trace peft's own path) nor FSDP (sharded base weights). auto is off: measured on one H200 it saved memory
    (8B bf16, all linear layers) but cost speed on the 1B shape (q, v only) and bought none on 8B QLoRA."""
    t = cfg.train
    if cfg.method.kind not in LORA_METHODS or t.compile or t.distributed == "fsdp":
        if t.fused_lora == "on":
            raise ConfigError("train.fused_lora on needs a LoRA method without train.compile and FSDP",
                              field="train.fused_lora", hint="set train.fused_lora: auto")
        return False
    return t.fused_lora == "on"


def lean_mlp(cfg: RunConfig, lean: bool) -> bool:
    """Whether gated MLPs' down-projection adapters rebuild their input (loratui.train.lean.lean_gated_mlps): only
    on top of lean activations whose dropout is recomputed (not with gradient checkpointing or compile)."""
    t = cfg.train
    if t.lean_mlp == "on" and not lean:
        raise ConfigError("train.lean_mlp on needs lean activations", field="train.lean_mlp",
                          hint="set train.lean_activations: on, or train.lean_mlp: auto")
    return (lean and t.lean_mlp != "off" and not t.gradient_checkpointing and not t.compile
            and cfg.lora.dropout > 0)


def lean_activations(cfg: RunConfig, cuda: bool) -> bool:
    """Whether the run keeps lean LoRA activations (loratui.train.lean). auto: for a quantized base on a GPU, whose
    users chose it to save memory (8B QLoRA shape: -43% memory and faster; 16-bit LoRA of the 1B shape: -7% memory
    for -6% speed: bench/RESULTS.md)."""
    t = cfg.train.lean_activations
    wanted = t == "on" or (t == "auto" and cuda and cfg.quantized)
    return wanted and cfg.method.kind in LORA_METHODS


def register_varlen_attention() -> bool:
    """Register ``loratui_varlen`` with transformers: attention per packed example through torch's varlen kernel.
    Returns whether grouped key/value heads reach the kernel as they are (no copies).

    The packing collator hands the model ``cu_seq_lens_q/k`` and ``max_length_q/k`` (as transformers' own
    DataCollatorWithFlattening does for FlashAttention); the model passes them down to this function. No mask
    function is registered on purpose: transformers then builds no attention mask at all (the dense block mask SDPA
    needs for packed rows is quadratic in the packed length, and detecting packed rows costs a host sync a step).
    """
    import inspect
    import os

    import torch
    from torch.nn.attention.varlen import varlen_attn
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    params = inspect.signature(varlen_attn).parameters
    causal_kw = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    native_gqa = "enable_gqa" in params
    # torch 2.11's varlen_attn has no enable_gqa, yet hands the heads to FlashAttention as they are: where it
    # takes fewer key/value heads as they are, no 4x copies of keys and values a layer (3.9 ms of gaps a step on
    # the 8B shape and 2.3 GB kept for the backward: bench/NOTES.md round 13)
    local = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # this process's card (one per process under torchrun)
    gqa_as_is = native_gqa or (torch.cuda.is_available() and varlen_takes_gqa(varlen_attn, causal_kw, local))

    def forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        cu_q = kwargs.get("cu_seq_lens_q")
        if cu_q is None:  # an unpacked call (a single sequence, e.g. a probe): plain causal SDPA
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
        if query.shape[0] != 1:
            raise ValueError("varlen attention expects one packed row per batch")
        # (1, heads, tokens, dim) -> (tokens, heads, dim)
        q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))
        dtype = q.dtype
        if q.is_cuda and dtype not in (torch.bfloat16, torch.float16):  # the FlashAttention kernel takes half types
            q, k, v = (x.to(torch.bfloat16) for x in (q, k, v))
        extra = dict(causal_kw)
        if k.shape[1] != q.shape[1]:
            if native_gqa:
                extra["enable_gqa"] = True
            elif not gqa_as_is:
                groups = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = varlen_attn(q, k, v, cu_q, kwargs.get("cu_seq_lens_k", cu_q), kwargs["max_length_q"],
                          kwargs.get("max_length_k", kwargs["max_length_q"]), scale=scaling, **extra)
        return out.to(dtype).unsqueeze(0), None  # (1, tokens, heads, dim), as the other implementations return

    AttentionInterface.register(VARLEN, forward)
    return gqa_as_is


def varlen_takes_gqa(varlen_attn, causal_kw: dict, device: str) -> bool:
    """Whether ``varlen_attn`` (called without ``enable_gqa``) takes fewer key/value heads than query heads as they
    are: outputs and all three gradients against the same call on repeated heads, on two tiny packed examples
    (grouped heads mapped another way, or an error, say no). Once a process, a few milliseconds."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(48, h, 64, device=device, dtype=torch.bfloat16, generator=g) for h in (4, 2, 2))
    cu = torch.tensor([0, 20, 48], dtype=torch.int32, device=device)
    got = []
    try:
        with torch.enable_grad(), torch.autocast(torch.device(device).type, enabled=False):
            for as_is in (True, False):
                qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
                k2, v2 = (kk, vv) if as_is else (kk.repeat_interleave(2, dim=1), vv.repeat_interleave(2, dim=1))
                out = varlen_attn(qq, k2, v2, cu, cu, 28, 28, **causal_kw)
                out.float().square().sum().backward()
                got.append((out, qq.grad, kk.grad, vv.grad))
    except (RuntimeError, ValueError, TypeError, IndexError):
        return False
    return all(a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=2e-2, rtol=2e-2)
               for a, b in zip(*got))


def compile_layers(model) -> int:
    """Regional compilation: each decoder layer (transformers' GradientCheckpointingLayer) compiled in place with
    dynamic shapes, so packed batches of new lengths do not recompile; returns how many."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
