"""The engine under torchrun: which rank this is, the strategy (DDP or FSDP), agreeing on stop/checkpoint.

Communication is torch.distributed's (the Trainer's own DDP/FSDP through accelerate); the one thing added here is a
small all-reduce of the stop and checkpoint-now flags at each step end, on a gloo group (CPU: no GPU sync), so every
rank stops or saves at the same step. A rank that stopped alone would leave the others waiting in a collective.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from loratui.core.config import RunConfig
from loratui.core.errors import RunError
from loratui.core.fileio import atomic_write_text


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    env = os.environ
    if "WORLD_SIZE" not in env:
        return World()
    return World(rank=int(env.get("RANK", 0)), local_rank=int(env.get("LOCAL_RANK", 0)),
                 size=int(env.get("WORLD_SIZE", 1)))


def strategy(cfg: RunConfig, w: World, card_bytes: int | None, single_card_bytes: int | None = None) -> str:
    """none | ddp | fsdp. auto: DDP for the LoRA methods (a replica a card); FSDP for full fine-tuning when the
    estimate (``single_card_bytes`` when the caller has it) says the model does not fit one card."""
    if not w.distributed:
        return "none"
    choice = cfg.train.distributed
    if choice in ("ddp", "fsdp"):
        return choice
    if cfg.method.kind == "full" and card_bytes:
        if single_card_bytes is None:
            from loratui.train.estimate import estimate_memory

            single_card_bytes = estimate_memory(cfg, compare=False).rows[0].total
        if single_card_bytes > 0.9 * card_bytes:
            return "fsdp"
    return "ddp"


def fsdp_settings(model, gradient_checkpointing: bool) -> tuple[bool, dict]:
    """TrainingArguments' ``fsdp`` and ``fsdp_config`` for this model: shard each decoder layer, load weights once
    (rank 0) and broadcast them, gather a full state dict for the saved adapter or model."""
    layer_classes = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.endswith("DecoderLayer")})
    config = {"cpu_ram_efficient_loading": True, "sync_module_states": True, "use_orig_params": False,
              "state_dict_type": "FULL_STATE_DICT", "activation_checkpointing": gradient_checkpointing,
              "reshard_after_forward": True}
    if layer_classes:
        config["transformer_layer_cls_to_wrap"] = layer_classes
    return True, config


def unshard_head_for_fused_ce(model) -> bool:
    """Let Liger's fused linear cross-entropy read the LM head's weight under FSDP2.

    The fused loss takes ``lm_head.weight`` directly instead of calling the head, so FSDP's pre-forward hook of the
    head's unit never runs. accelerate puts the head in one unit with the final norm, which gathers both when the
    norm runs, but for a PEFT model it does not find the norm (it looks one level too high: accelerate 1.15) and the
    head is gathered alone, only when called: the loss then meets a sharded DTensor ("mixed torch.Tensor and
    DTensor", seen on 2x H200 with QLoRA). Here the final norm's pre-forward hook gathers the head's unit when it
    is still sharded; FSDP reshards it and reduces its gradients at the end of backward as for any unit whose
    forward output did not reach the loss. Returns False when the model has no head and final norm to hook.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = getattr(base, getattr(base, "base_model_prefix", "") or "", None)
    norms = [m for _, m in decoder.named_children() if "Norm" in type(m).__name__] if decoder is not None else []
    if head is None or not norms:
        return False

    def gather_head(_module, _args) -> None:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor

        if isinstance(head, FSDPModule) and isinstance(head.weight, DTensor):
            head.unshard()

    norms[-1].register_forward_pre_hook(gather_head)
    return True


class Agreement:
    """Every rank's stop / checkpoint-now flags, OR-ed across ranks (gloo, CPU tensors), one step behind.

    The reduction of the flags a rank holds at the end of step N is started without waiting and read at the end of
    step N+1: no rank waits on the host for the others every step (a CPU barrier a step held back each rank's
    kernel launches), and every rank still acts on the same result at the same step, one step after the request.
    """

    def __init__(self, w: World):
        self.w = w
        self.group = None
        self.pending = None  # (work, flags) of the reduction started at the previous step end

    def __call__(self, stop: bool, checkpoint: bool) -> tuple[bool, bool]:
        """Send this step's flags; return what every rank agreed on at the previous step."""
        if not self.w.distributed:
            return stop, checkpoint
        import torch
        import torch.distributed as dist

        if self.group is None:
            self.group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
        agreed = self.wait()
        flags = torch.tensor([int(stop), int(checkpoint)], dtype=torch.int32)
        self.pending = (dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flags)
        return agreed

    def wait(self) -> tuple[bool, bool]:
        """The result of the reduction in flight (every rank has started the same number of them)."""
        if self.pending is None:
            return False, False
        work, flags = self.pending
        self.pending = None
        work.wait()
        return bool(flags[0]), bool(flags[1])


def check_resume_world(first_started: dict | None, w: World) -> None:
    """A run resumes on the cards it started on: the effective batch, the data order and the schedule depend on it."""
    if not first_started:
        return
    before = int(first_started.get("world_size") or 1)
    if before != w.size:
        raise RunError(f"this run trained with {before} process{'es' if before > 1 else ''} "
                       f"({'one card' if before == 1 else f'{before} cards'}) and is resuming with {w.size}",
                       field="train.gpus",
                       hint=f"resume on {before} card{'s' if before > 1 else ''} (train.gpus: {before}); or start a "
                            "new run from its config with the cards you have (the effective batch changes)")


def rank_errors_dir(run_path: Path) -> Path:
    return Path(run_path) / "ranks"


def write_rank_error(run_path: Path, w: World, error: str, message: str) -> None:
    """What killed this rank, for the supervisor's ``failed`` event (each rank writes only its own file)."""
    folder = rank_errors_dir(run_path)
    folder.mkdir(exist_ok=True)
    atomic_write_text(folder / f"rank-{w.rank}.json", json.dumps(
        {"rank": w.rank, "local_rank": w.local_rank, "error": error, "message": message[:500],
         "time": round(time.time(), 3), "pid": os.getpid()}))


def dump_trainable(model, run_path: Path, w: World, step: int) -> None:
    """Test hook (LORATUI_TEST_RANK_WEIGHTS=1): each rank saves the trainable weights it holds after training, so
    a test can check every replica equals the saved adapter."""
    import torch

    state = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    folder = rank_errors_dir(run_path)
    folder.mkdir(exist_ok=True)
    torch.save({"step": step, "state": state}, folder / f"weights-rank-{w.rank}.pt")
