"""The ``train:`` section of the run configuration (loratui.core.config): schedule, evaluation, saving, the fast
path's switches, memory fit, cards. Light: pydantic only."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator

from loratui.core.config_base import (BIG, MAX_LR, Attention, Optimizer, Precision, Scheduler, Section, Switch,
                                      switch_value)


class TrainSection(Section):
    epochs: float = Field(3.0, gt=0, le=1_000_000)
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: Optional[int] = Field(None, ge=1, le=BIG)
    """Stop after this many optimizer steps."""
    batch_size: int = Field(8, ge=1, le=1_000_000)
    """Examples per device per step."""
    eval_batch_size: Optional[int] = Field(None, ge=1, le=1_000_000)
    grad_accum: int = Field(1, ge=1, le=1_000_000)
    """Gradient accumulation steps."""
    lr: float = Field(2e-4, gt=0)
    """Peak learning rate (LoRA: 1e-4 to 3e-4; full fine-tuning: about 2e-5)."""

    @field_validator("lr")
    @classmethod
    def _sane_lr(cls, v: float) -> float:
        if v > MAX_LR:
            raise ValueError(f"{v:g} is far above any learning rate that trains (LoRA: 1e-4 to 3e-4; full "
                             f"fine-tuning: about 2e-5); at most {MAX_LR:g} is accepted")
        return v
    scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int = Field(0, ge=0, le=BIG)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    early_stopping_patience: Optional[int] = Field(None, ge=1, le=1_000_000)
    """Stop gracefully after this many evaluations without improvement; the adapter then holds the best
    evaluation's weights (LoRA methods). Empty: train to the end (a plateau is still reported as an alert)."""
    early_stopping_metric: Literal["auto", "eval_loss", "accuracy", "f1"] = "auto"
    """auto: accuracy for classifiers, the eval loss otherwise."""
    early_stopping_min_delta: float = Field(0.0, ge=0)
    """The smallest change that counts as an improvement."""
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    """Also log to TensorBoard (event files in the run folder's tensorboard/: `tensorboard --logdir runs/`) and/or
    Weights & Biases (offline unless WANDB_API_KEY is set), through the Trainer's own reporting."""
    max_bad_steps: int = Field(3, ge=1, le=1_000_000)
    """Logged steps in a row with a non-finite loss or gradient norm before the run stops as failed (diverged),
    keeping its checkpoints from before the first bad step."""
    on_diverge: Literal["fail", "rollback"] = "fail"
    """What a diverged run does: fail (keeping its good checkpoints), or rollback: go back to the last checkpoint
    from before the first bad step and go on at the learning rate times rollback_lr_factor."""
    rollback_lr_factor: float = Field(0.5, gt=0, lt=1)
    """Each roll-back multiplies the learning rate (its whole schedule) by this."""
    max_rollbacks: int = Field(2, ge=1, le=100)
    """Roll-backs before a run that keeps diverging fails."""
    logging_steps: int = Field(5, ge=1, le=BIG)
    eval_steps: Optional[int] = Field(None, ge=1, le=BIG)
    """Evaluate every N steps (empty: once per epoch)."""
    eval_on_start: bool = True
    """Evaluate the untrained model first, so the curve starts from the base model's loss."""
    save_steps: Optional[int] = Field(None, ge=1, le=BIG)
    """Checkpoint every N steps (empty: once per epoch)."""
    save_total_limit: Optional[int] = Field(2, ge=1, le=1_000_000)
    gradient_checkpointing: bool = False
    """Recompute every layer's activations in the backward pass (keeps only layer inputs): less memory, about 30%
    slower. Left off, the memory fit (train.fit) may still checkpoint some layers when the run would not fit."""
    activation_offload: Switch = "auto"
    """Move the activations saved for backward to pinned host memory in the forward pass and back in the backward
    pass, overlapped with compute on a second CUDA stream (TRL's offloader); auto: when the memory fit picks it."""
    embedding_offload: Switch = "auto"
    """The input embedding table in pinned host memory, each step's rows copied to the card (a LoRA run never
    trains it; 1.0 GiB of the Llama-3-8B shape's 4-bit base); not for a head tied to it. auto: when the memory fit
    picks it (the cheapest saver: a host lookup and one small copy a step)."""
    fit: Literal["auto", "off"] = "auto"
    """auto: before training, the engine estimates this run's GPU memory and, when it exceeds the budget, adds the
    cheapest savers that make it fit (checkpointing some or all layers, activation offload, a smaller micro-batch
    with more accumulation: the same effective batch); it says what it chose and why. off: run exactly as written."""
    memory_budget: Union[Literal["auto"], float] = "auto"
    """GiB of GPU memory the run may use (as nvidia-smi shows it); auto: what is free on the card at launch. A number
    also caps the process (a 16 GiB budget on an 80 GiB card behaves like a 16 GiB card)."""
    precision: Precision = "auto"
    """auto picks bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    optimizer: Optimizer = "auto"
    """auto: fused AdamW on a GPU (8-bit AdamW where the memory fit needs it, and it says so), AdamW on CPU (paged
    8-bit AdamW stays a choice for QLoRA)."""
    attention: Attention = "auto"
    """auto: variable-length attention over packed batches on a GPU (no attention across examples), else SDPA."""
    liger: Switch = "auto"
    """Liger kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU); auto: on a GPU when installed."""
    compile: Union[bool, Literal["regional"]] = False
    """torch.compile the model (slower start, recompiles as batch shapes change); regional: each decoder layer
    compiled on its own with dynamic shapes (what Unsloth does), the loss and the rest left eager."""
    lean_activations: Switch = "auto"
    """LoRA keeps only what its backward pass needs: a 4-bit/8-bit base keeps its norms and embeddings in the compute
    dtype (bf16), and LoRA dropout is recomputed in the backward pass instead of stored; auto: on for QLoRA and 8-bit
    LoRA on a GPU (less memory for a little speed)."""

    lean_mlp: Switch = "auto"
    """With lean activations, a gated MLP's (Llama, Mistral, Qwen) down-projection adapter rebuilds its input from
    what the activation keeps instead of keeping its own copy; auto: on wherever lean_activations is on (8B QLoRA
    shape: -2.1 GiB, -16% tokens/s: bench/RESULTS.md). Ignored with gradient checkpointing or compile."""

    fused_lora: Switch = "auto"
    """Each adapted projection (frozen layer + LoRA) runs as one autograd function that keeps only its input and
    redraws the dropout mask: a memory lever. 8B bf16 LoRA on all linear layers, 16 rows: -23% memory, -13% speed
    (round 10; +3% in round 6, before peft's own path stopped casting each adapter's input to fp32); 1B LoRA on q,v
    -11% speed; 8B QLoRA no change (bench/RESULTS.md). auto: off. Plain LoRA only."""

    cuda_graphs: Switch = "auto"
    """Each decoder layer's forward and backward replayed as CUDA graphs (one launch instead of hundreds; packed
    steps padded to a few sizes). For packed LoRA/QLoRA on one CUDA card without compile or fused LoRA; with gradient
    checkpointing the graphs checkpoint every layer themselves (activation offload then moves those checkpoints
    only). auto: on when the memory fit finds room for the graphs (1.65x the estimate, 2x on a 4-bit or 8-bit base)
    and a step is small enough to wait on the host (8B QLoRA shape 3.1x tokens/s at 1.8x the memory, 1B LoRA 1.8x at
    1.6x: round 7; 8B bf16 LoRA on 16 rows, a busy card, 0.85x: round 10), and with every layer checkpointed where
    memory is short or the run fits as written but not with the graphs' memory, on steps small enough to wait on the
    host (8B QLoRA 2.5x Unsloth's tokens/s at 9.6 GiB; 1B LoRA 3.3x at half its memory: bench/RESULTS.md, round 8)."""

    wide_loss_chunks: Switch = "auto"
    """Liger's fused cross-entropy computes the LM head's logits a chunk of tokens at a time; on: chunks 8x its
    default width (about 8 hidden states of logits per token: fewer, larger matmuls and launches; 1B LoRA +7%
    tokens/s, round 12) for (2 + 4) x 7 x hidden bytes per token more at the head. auto: on when the memory fit finds
    room for it; off: Liger's own chunks. Causal LMs with Liger, sft objective."""

    _liger_bool = field_validator("liger", "lean_activations", "lean_mlp", "activation_offload", "fit", "fused_lora",
                                  "embedding_offload", "wide_loss_chunks",
                                  "cuda_graphs", mode="before")(lambda v: switch_value(v))

    @field_validator("memory_budget")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if v != "auto" and not 1 <= v <= 100_000:
            raise ValueError("give GiB between 1 and 100000 (e.g. 16 for a 16 GB card), or auto")
        return v
    gpus: Union[Literal["auto"], int, list[int]] = "auto"
    """Which cards: auto (every visible card), a count (the first N), or a list of indices (as nvidia-smi numbers
    them). Several cards: one process a card under torchrun."""
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    """auto: one card = one process; several = DDP (a replica a card), FSDP (sharded) for full fine-tuning when
    the model does not fit one card. none: one process on the first chosen card."""
    nodes: int = Field(1, ge=1, le=1024)
    """Machines taking part (each with the same cards); more than 1 needs rdzv_endpoint."""
    rdzv_endpoint: Optional[str] = None
    """host:port of the rendezvous (the first node) when nodes > 1."""

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("give auto, a count of cards, or a list of card indices")
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1 card (or auto)")
        if isinstance(v, list):
            if not v:
                raise ValueError("the list of cards is empty (or write auto)")
            if any(i < 0 for i in v) or len(set(v)) != len(v):
                raise ValueError("card indices must be distinct and >= 0, as nvidia-smi numbers them")
        return v
    seed: int = Field(42, ge=0, le=2**32 - 1)
    """Seeds Python, NumPy and torch before the model is built: the same config gives the same run."""
    dataloader_workers: int = Field(0, ge=0, le=1024)
