"""The run's events as typed models: one pydantic model per ``kind`` (the discriminator), extra fields kept, so old
readers open new run folders and new readers old ones. Reading and writing them (strict JSON, a tail that skips bad
lines) is :mod:`loratui.core.protocol`'s, which re-exports every name here. Light module (pydantic only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Event(BaseModel):
    """Every event: ``kind`` and ``time`` (seconds since the epoch, the engine's clock); extra fields are kept."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    kind: str
    time: Optional[float] = None

    # dict-style reading, so code written against the JSON lines keeps working
    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in type(self).model_fields else (self.__pydantic_extra__ or {}).get(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields:
            return getattr(self, key)
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        return key in type(self).model_fields or key in (self.__pydantic_extra__ or {})

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class PhaseEvent(Event):
    """What the engine is busy with before, between and after training steps."""

    kind: Literal["phase"] = "phase"
    phase: str = ""
    """checking | preparing data | loading model | evaluating the base model | training | saving"""


class StartedEvent(Event):
    """The engine set up the run (written by every engine process, resumed ones too)."""

    kind: Literal["started"] = "started"
    run: Optional[str] = None
    model: Optional[str] = None
    method: Optional[str] = None
    objective: Optional[str] = None
    """What the run learns from: sft, or a preference objective (dpo, orpo, kto)."""
    task: Optional[str] = None
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    train_examples: Optional[int] = None
    eval_examples: Optional[int] = None
    """Held-out examples in each evaluation during training (``data.eval_samples`` may cut the curve's set)."""
    final_eval_examples: Optional[int] = None
    """Held-out examples in the closing evaluation (the whole held-out set)."""
    max_steps: Optional[int] = None
    epochs: Optional[float] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    labels: Optional[list[Any]] = None
    data_stats: Optional[dict] = None
    resumed: bool = False
    world_size: Optional[int] = None
    """Processes training together (1: one process; several: one a card under torchrun)."""
    distributed: Optional[str] = None
    """none | ddp | fsdp"""
    gpus: Optional[list[Any]] = None
    """This node's cards: {index (as NVML numbers it), name, memory_total (bytes)}."""
    per_device_batch: Optional[int] = None
    grad_accum: Optional[int] = None
    effective_batch: Optional[int] = None
    """per_device_batch x world_size x grad_accum: sequences an optimizer step."""
    logging_steps: Optional[int] = None
    """A step event every this many steps (and at step 1): the watchdog expects that much silence between them."""
    eval_steps: Optional[int] = None
    """An evaluation every this many steps (null: once an epoch)."""
    fit: Optional[dict] = None
    """The memory fit: budget_gib, source, needed_gib, estimate_gib, fits, changes (what it added), batch_size,
    grad_accum, checkpointing, ckpt_layers, offload, cost (estimated extra step time), faster (memory savers turned
    off for speed), graphs (CUDA graphs turned on for speed), embedding_offload (the input embeddings moved to host
    memory), optimizer (8-bit AdamW chosen for memory, else null)."""


class ResumedEvent(Event):
    """Training continues from a checkpoint (after ``started``); ``checkpoint`` null and ``step`` 0: the run had no
    complete checkpoint and trains again from step 0."""

    kind: Literal["resumed"] = "resumed"
    checkpoint: Optional[str] = None
    step: Optional[int] = None


class StepEvent(Event):
    """A logged optimizer step."""

    kind: Literal["step"] = "step"
    step: int
    max_steps: Optional[int] = None
    epoch: Optional[float] = None
    loss: Optional[float] = None
    lr: Optional[float] = None
    grad_norm: Optional[float] = None
    tokens_per_s: Optional[float] = None
    tokens_seen: Optional[int] = None
    elapsed: Optional[float] = None
    """Seconds this engine process has spent training (evaluations during training left out: tokens/s counts
    training time)."""
    eta_s: Optional[float] = None
    """The engine's estimate of the seconds left (the same figure its progress line prints)."""


class EvalEvent(Event):
    """An evaluation; every metric the trainer reported is kept (``f1`` and others as extra fields)."""

    kind: Literal["eval"] = "eval"
    step: Optional[int] = None
    epoch: Optional[float] = None
    eval_loss: Optional[float] = None
    perplexity: Optional[float] = None
    accuracy: Optional[float] = None
    f1: Optional[float] = None


class CheckpointEvent(Event):
    """A trainer checkpoint was saved."""

    kind: Literal["checkpoint"] = "checkpoint"
    step: Optional[int] = None
    path: Optional[str] = None


class MemoryEvent(Event):
    """Torch's view of the GPU memory of this process (GiB)."""

    kind: Literal["memory"] = "memory"
    step: Optional[int] = None
    device: Optional[str] = None
    allocated_gb: Optional[float] = None
    reserved_gb: Optional[float] = None
    peak_allocated_gb: Optional[float] = None


class StoppedEvent(Event):
    """Stopped on request; the adapter and a checkpoint were saved at ``step`` (null: before training began)."""

    kind: Literal["stopped"] = "stopped"
    step: Optional[int] = None
    adapter: Optional[str] = None
    checkpoint: Optional[str] = None
    message: Optional[str] = None


class FinishedEvent(Event):
    """Training reached its last step and the output was saved."""

    kind: Literal["finished"] = "finished"
    step: Optional[int] = None
    adapter: Optional[str] = None
    runtime_s: Optional[float] = None
    """Seconds of this engine process's training (the whole run's time is the fold's ``elapsed``)."""
    train_loss: Optional[float] = None
    eval_loss: Optional[float] = None
    """The final evaluation's loss (the fold falls back to the last ``eval`` event when null)."""
    eval: Optional[dict] = None
    """The final evaluation's metrics (the last evaluation's, also when it fell on the final step)."""


class FailedEvent(Event):
    """The run failed: a one-line message and a hint saying what to do."""

    kind: Literal["failed"] = "failed"
    step: Optional[int] = None
    error: Optional[str] = None
    message: Optional[str] = None
    hint: Optional[str] = None
    field: Optional[str] = None


class AlertEvent(Event):
    """Something a user should look at, the run going on (or stopping early): a loss spike, a plateau, early
    stopping."""

    kind: Literal["alert"] = "alert"
    step: Optional[int] = None
    alert: str = ""
    """spike | plateau | early_stop | skipped | rollback | chosen_falling | graphs_off"""
    message: Optional[str] = None
    from_step: Optional[int] = None
    """rollback: the checkpoint's step training went back to."""
    lr_factor: Optional[float] = None
    """rollback: the learning rate schedule's multiplier from ``from_step`` on (all roll-backs so far)."""


EVENT_TYPES: tuple[type[Event], ...] = (
    StartedEvent, PhaseEvent, ResumedEvent, StepEvent, EvalEvent, CheckpointEvent, MemoryEvent, StoppedEvent,
    FinishedEvent, FailedEvent, AlertEvent,
)
EVENT_KINDS: dict[str, type[Event]] = {t.model_fields["kind"].default: t for t in EVENT_TYPES}
AnyEvent = Annotated[Union[tuple(EVENT_TYPES)], Field(discriminator="kind")]  # type: ignore[valid-type]
_ADAPTER: TypeAdapter = TypeAdapter(AnyEvent)
