"""What the training step keeps in memory per token: the activations saved for the backward pass, the head's
logits, the backward pass's working set; and the levers (speed.resolve's choices) that change them. The
arithmetic behind :func:`loratui.train.estimate.estimate_memory` (calibration: tests/test_estimate.py)."""

from __future__ import annotations

from dataclasses import dataclass

@dataclass
class Shape:
    layers: int
    hidden: int
    kv_hidden: int
    intermediate: int
    vocab: int
    gated: bool  # SwiGLU-style MLP (gate, up, down)
    causal: bool
    heads: int = 1


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
        heads=heads,
    )


@dataclass
class Levers:
    """What the run will do, as the estimate needs it (speed.resolve's choices plus device and precision)."""

    cuda: bool
    precision: str
    packing: bool
    attention: str
    liger: bool
    optimizer: str
    lean: bool = False  # train.lean_activations (loratui.train.lean)
    lean_mlp: bool = False
    ckpt_layers: int | None = None  # with gradient checkpointing: how many layers (None: all; the memory fit's choice)
    offload: bool = False  # activation offload to host memory (train.activation_offload, or the memory fit's choice)
    fused: bool = False  # train.fused_lora: each adapted projection keeps its input only (loratui.train.fused_lora)
    host_embedding: bool = False  # train.embedding_offload: the input embedding table in host memory


# Calibrated constants (tests/test_estimate.py holds the measured points they were checked against)
#: share of the (uncheckpointed) activations that stays on the card under activation offload: 8B QLoRA shape, batch
#: 4, H200: NVML 16.38 -> 13.61 GiB of which about 9.3 GiB were activations (bench/RESULTS.md, round 5)
OFFLOAD_KEPT = 0.7
HEAD_BYTES_EXTRA = 10  # per logit beyond the compute-dtype logits: fp32 copy, log-softmax, and their gradients


def _activation_bytes_per_token(shape: Shape, e: int, trainable_linear: set[str], lora_width: float,
                                full: bool, checkpointing: bool, int8_width: float = 0, *, resid: int | None = None,
                                proj: int | None = None, liger: bool = False, attention: str = "sdpa",
                                masked: bool = False, ckpt_layers: int | None = None,
                                offload: bool = False, fused_ce: int | None = None) -> tuple[float, float, float]:
    """(bytes per token saved across all layers, bytes per token for the head/loss, backward working set per token).

    ``e``: the compute dtype's bytes (what matmuls produce under autocast); ``resid``: the residual stream's bytes
    (fp32 when the embeddings are fp32: full fine-tuning, fp32 weights, or a quantized base after
    prepare_model_for_kbit_training); ``proj``: what the frozen base projections return (bitsandbytes casts its
    output back to the input's dtype, autocast gives ``e``). ``masked``: SDPA with GQA gets repeated keys/values.
    ``fused_ce``: Liger's fused linear cross-entropy, as its chunk multiplier (speed.loss_chunk: 0 off, 1 Liger's
    chunks, 8 wide ones; default: 1 with Liger; off for the preference objectives, whose trainers take
    log-probabilities from the logits themselves).
    """
    h, kv, i = shape.hidden, shape.kv_hidden, shape.intermediate
    r = resid or e
    p = proj or e

    def needs(*names: str) -> bool:
        return full or any(n in trainable_linear for n in names)

    # norms (two a layer): eager RMSNorm keeps an fp32 copy of its input; Liger's keeps the input itself and rstd;
    # a norm whose weight trains also keeps its normalized output
    per_layer = 2 * ((r * h if liger else 4 * h) + 4 + (r * h if full else 0))
    # attention: q, k, v (in the compute dtype) and the output kept by the kernel; eager SDPA with a mask repeats
    # the key/value heads (transformers' repeat_kv) before the call
    kv_saved = h if masked else kv
    per_layer += e * (2 * h + 2 * kv_saved) + 4 * shape.heads
    per_layer += e * h if needs("q_proj", "k_proj", "v_proj", "query", "key", "value", "c_attn") else 0
    per_layer += e * h if needs("o_proj", "dense", "c_proj", "out_proj") else 0
    # MLP: the activation's inputs (eager SiLU * up keeps three tensors, Liger's SwiGLU two), in the dtype the
    # projections return, and the inputs of trainable projections
    if shape.gated:
        per_layer += (2 if liger else 3) * p * i
        per_layer += e * h if needs("gate_proj", "up_proj") else 0
        per_layer += e * i if needs("down_proj") else 0
    else:
        per_layer += p * i  # GELU input
        per_layer += e * h if needs("fc1", "intermediate", "c_fc", "dense") else 0
        per_layer += e * i if needs("fc2", "output", "c_proj", "dense") else 0
        per_layer += 2 * h  # dropout masks (encoders)
    # LoRA dropout: a 1-byte mask and the adapted input in the compute dtype (the dropped copy, or autocast's cast)
    per_layer += (e + 1) * lora_width
    # bitsandbytes int8 matmuls keep their own fp16 copy and int8 copy of every input for backward
    per_layer += (2 + 1) * int8_width
    layers = shape.layers
    if checkpointing:
        # the first ``ckpt_layers`` (all by default) keep their input only, the rest everything; one layer is
        # recomputed at a time in the backward pass
        k = layers if ckpt_layers is None else max(0, min(ckpt_layers, layers))
        # with offload, the checkpointed layers' inputs go to host memory (two on the card: one in flight, one
        # prefetched for the backward pass)
        inputs = min(k, 2) if offload else k
        rest = (layers - k) * per_layer * (OFFLOAD_KEPT if offload else 1)
        saved = inputs * r * h + rest + (per_layer if k else 0)
    elif offload:
        # everything saved for backward is offered to the offloader, but much stays (small tensors, the stash
        # kept for overlap, what the fast path saves outside autograd's hooks): measured
        saved = layers * per_layer * OFFLOAD_KEPT
    else:
        saved = layers * per_layer
    if not shape.causal:
        head = 8 * shape.vocab + r * h
    elif (chunk := int(liger) if fused_ce is None else int(fused_ce)):
        # fused linear cross-entropy: no logits; the final norm's input, the hidden-state gradient (computed in
        # the forward pass) and one chunk of logits (about ``chunk`` x hidden-size wide per token, at most the
        # whole step's) in fp32 + compute dtype
        head = 2 * r * h + (e + 4) * min(chunk * h, shape.vocab)
    else:
        head = (e + HEAD_BYTES_EXTRA) * shape.vocab
    # backward working set (one layer at a time): gradients of the residual stream and of the MLP's inner width
    work = 2 * r * h + 2 * p * i
    return saved, head, work
