"""The engine's Trainer classes: checkpoints that appear only whole, real tokens counted on the device, and the
batch shapes an out-of-memory report names. Torch side (imports transformers lazily)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from loratui.train.failures import disk_full_error, is_disk_full

if TYPE_CHECKING:
    from loratui.train.engine import Engine


def token_counting_trainer():
    """The Trainer, counting each training batch's real tokens on the device (read at logging time only).

    transformers' own count (``include_num_input_tokens_seen``) calls ``.item()`` on every batch: a host sync that
    stops the CPU from queueing the next step's kernels while the GPU works.
    """
    from transformers import Trainer

    from loratui.train.graphs import PAD_KEY

    class LoratuiTrainer(Trainer):
        _tokens = None
        offload = None  # TRL's activation offloader (train.activation_offload), set by the engine

        def compute_loss_context_manager(self):
            ctx = super().compute_loss_context_manager()
            if self.offload is None or not self.model.training:  # evaluation saves nothing for a backward pass
                return ctx
            import contextlib

            stack = contextlib.ExitStack()
            stack.enter_context(ctx)
            stack.enter_context(self.offload)
            return stack

        _grad_params = None  # the parameters that train (trim_step_host_work)
        _flop_params = None
        _copies = None  # loratui.train.adapter_copies, where the engine made them

        def training_step(self, model, inputs, *args, **kwargs):
            if self._grad_params is None:  # once a run: the Python around each step, and the adapters' copies
                self._grad_params = trim_step_host_work(self, model)
                self._copies = getattr(self.model, "loratui_adapter_copies", None)
            n = inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].numel()
            n -= inputs.pop(PAD_KEY, 0)  # a step padded for CUDA graphs (loratui.train.graphs) counts real tokens
            self._tokens = n if self._tokens is None else self._tokens + n
            loss = super().training_step(model, inputs, *args, **kwargs)
            if self._copies is not None:
                self._copies.collect()
            return loss

        def _maybe_log_save_evaluate(self, tr_loss, *args, **kwargs):
            logging = self.control.should_log
            out = super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)
            # the Trainer resets its running loss by subtracting it from itself: a NaN logged once would stay NaN
            # for the rest of the run, after the bad batch was skipped (a logging step reads the loss anyway)
            if logging and not bool(tr_loss.isfinite()):
                tr_loss.zero_()
            return out

        def _clip_grad_norm(self, model):
            if not self._grad_params or self.is_fsdp_enabled or self._has_mixed_mesh_grads(model):
                return super()._clip_grad_norm(model)  # FSDP's clipping matches the model's own parameter list
            return self.accelerator.clip_grad_norm_(self._grad_params, self.args.max_grad_norm)

        def floating_point_ops(self, inputs):
            # the Trainer's count walks every module and parameter each step (4.6 ms a step on the 8B shape)
            main = getattr(self.model, "main_input_name", "input_ids")
            if main not in inputs or not hasattr(self.model, "num_parameters"):
                return 0
            if self._flop_params is None:
                self._flop_params = self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs[main].numel() * self._flop_params

        def _get_grad_norm(self, model, grad_norm=None):
            grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
            skip_bad_update(self, model, grad_norm)
            return grad_norm

        def prediction_step(self, model, inputs, *args, **kwargs):
            inputs.pop(PAD_KEY, None)
            return super().prediction_step(model, inputs, *args, **kwargs)

        lr_factor = 1.0  # a roll-back's learning-rate multiplier (train.on_diverge: rollback), set by the engine

        def _load_optimizer_and_scheduler(self, checkpoint):
            out = self._load_state(checkpoint)
            if checkpoint is not None and self.lr_factor != 1.0:
                scale_lr(self.optimizer, self.lr_scheduler, self.lr_factor)
            return out

        def _load_state(self, checkpoint):
            if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
                return super()._load_optimizer_and_scheduler(checkpoint)
            # CPU processes under torchrun (CI's gloo runs): transformers maps the optimizer state to "cpu:0",
            # which torch.load cannot restore; plain "cpu" is the same memory
            import torch

            load = torch.load

            def cpu_load(*args, **kwargs):
                if str(kwargs.get("map_location", "")).startswith("cpu"):
                    kwargs["map_location"] = "cpu"
                return load(*args, **kwargs)

            torch.load = cpu_load
            try:
                return super()._load_optimizer_and_scheduler(checkpoint)
            finally:
                torch.load = load

        def tokens_seen(self) -> int:
            """Real (non-padding) tokens trained on by this process since it started, all ranks together."""
            if self._tokens is None:
                return 0
            import torch

            total = torch.as_tensor(self._tokens, device=self.args.device, dtype=torch.int64)
            return int(self.accelerator.gather(total.reshape(1)).sum().item())

    return LoratuiTrainer


def _fsync(path: Path) -> None:
    """Flush one file's or folder's entry to disk (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for p in [*sorted(folder.rglob("*")), folder]:
        _fsync(p)


def batch_shape(inputs) -> dict:
    """Shapes of the tensors in a batch, for an out-of-memory report."""
    out = {}
    for key, value in (inputs or {}).items():
        shape = getattr(value, "shape", None)
        if shape is not None:
            out[key] = list(shape)
    return out


def scale_lr(optimizer, scheduler, factor: float) -> None:
    """The learning rate and its whole schedule times ``factor``, after a checkpoint's optimizer and scheduler were
    loaded (their saved state carries the old rates: a resumed schedule would otherwise climb back to them)."""
    opt = getattr(optimizer, "optimizer", optimizer)
    for group in opt.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    sched = getattr(scheduler, "scheduler", scheduler)
    if sched is not None and hasattr(sched, "base_lrs"):
        sched.base_lrs = [b * factor for b in sched.base_lrs]
        if hasattr(sched, "_last_lr"):
            sched._last_lr = [group["lr"] for group in opt.param_groups]


def trim_step_host_work(trainer, model) -> list:
    """The Python the Trainer runs around each step while the card waits, done once instead: ``model.train()`` each
    micro-batch walks every module (5.9 ms on the 8B shape with LoRA on all linear layers, on a 2-core box),
    ``model.zero_grad()`` and the gradient clipping every parameter, frozen ones included (2.8 and 2.7 ms). The
    model keeps its modes: train() still runs whenever a module is not in training mode (after evaluation). Returns
    the parameters that train (the clipping's list); left as they are under FSDP and DeepSpeed, whose wrappers own
    those calls."""
    params = [p for p in model.parameters() if p.requires_grad]
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return params
    modules = list(model.modules())
    train, zero_grad = model.train, model.zero_grad

    def train_once(mode: bool = True):
        if mode and all(m.training for m in modules):
            return model
        return train(mode)

    def zero_trained(set_to_none: bool = True) -> None:
        if not set_to_none:
            return zero_grad(set_to_none)
        for p in params:  # a frozen parameter holds no gradient
            p.grad = None

    model.train, model.zero_grad = train_once, zero_trained  # eval() calls train(False): the real walk
    return params


def skip_bad_update(trainer, model, grad_norm) -> None:
    """A step whose gradients are not finite changes nothing (issue 18): the watchdog counts it, the weights and the
    optimizer's moments stay as they were. Fused AdamW (the GPU default) skips it on the device from a ``found_inf``
    flag, as it does under fp16's GradScaler: no host sync. On a CPU the norm is read (no sync to pay) and the
    gradients dropped, so the optimizer passes over every parameter. fp16 runs: the GradScaler already skips."""
    import torch

    if not torch.is_tensor(grad_norm) or trainer.args.fp16:
        return
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    if (getattr(opt, "defaults", None) or {}).get("fused"):
        opt.found_inf = (~torch.isfinite(grad_norm)).float()
    elif grad_norm.device.type == "cpu" and not bool(torch.isfinite(grad_norm)):
        for p in model.parameters():
            p.grad = None


def _test_hook(name: str, step: int | str) -> float | None:
    """``LORATUI_TEST_<NAME>=STEP[:VALUE]``: fault injection for tests (never set in normal use)."""
    spec = os.environ.get(f"LORATUI_TEST_{name}")
    if not spec:
        return None
    at, _, value = spec.partition(":")
    if at not in ("*", str(step)):
        return None
    return float(value) if value else 0.0


def trainer_class(engine: "Engine", base=None):
    """Trainer whose checkpoints appear only whole: written to ``.staging-checkpoint-N``, marked complete, renamed;
    rotation keeps complete checkpoints and deletes by rename-then-remove. It also records each batch's shape for an
    out-of-memory report."""
    import shutil

    import torch
    from transformers import Trainer

    from loratui.core import checkpoints as ck

    class SafeSaveTrainer(base or Trainer):
        _staging: Path | None = None
        last_batch_shape: dict | None = None

        def _get_output_dir(self, trial):
            return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            req = engine.stop_request
            req.saving = True
            try:
                self._save_checkpoint_whole(model, trial)
            finally:
                req.saving = False
            if req.ignored:
                engine.echo(f"checkpoint-{self.state.global_step} saved; ignored while saving: {', '.join(req.ignored)}")

        def _save_checkpoint_whole(self, model, trial):
            root = Path(super()._get_output_dir(trial))
            name = f"checkpoint-{self.state.global_step}"
            staging = root / f"{ck.STAGING_PREFIX}{name}"
            final = root / name
            main = self.args.should_save
            if main:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True, exist_ok=True)
            self.accelerator.wait_for_everyone()
            self._staging = staging
            try:
                super()._save_checkpoint(model, trial)
                if main:
                    nap = _test_hook("SAVE_SLEEP", self.state.global_step)
                    if nap:
                        engine.echo(f"test hook: sleeping {nap:g}s inside the save of {name}")
                        time.sleep(nap)
                    if _test_hook("ENOSPC", self.state.global_step) is not None:
                        import errno

                        raise OSError(errno.ENOSPC, "No space left on device (LORATUI_TEST_ENOSPC)")
                    ck.write_marker(staging / name)
                    from loratui.core.fileio import respect_umask

                    respect_umask(staging / name)
                    _fsync_tree(staging / name)
                self.accelerator.wait_for_everyone()
                if main:
                    old = None
                    if final.exists():  # the same step saved twice (save-now, or a resumed run): swap
                        old = final.with_name(f"{ck.DELETING_PREFIX}{name}-{os.getpid()}")
                        os.replace(final, old)
                    os.replace(staging / name, final)
                    shutil.rmtree(staging, ignore_errors=True)
                    if old is not None:
                        shutil.rmtree(old, ignore_errors=True)
                    _fsync(root)
                    ck.rotate(root, self.args.save_total_limit)
            except Exception as err:
                written = ck.folder_bytes(staging) if main else 0
                if main:
                    shutil.rmtree(staging, ignore_errors=True)
                if is_disk_full(err, root):
                    previous = ck.latest_complete(root)[0]
                    needed = max(ck.folder_bytes(previous) if previous else 0, written)
                    raise disk_full_error(root, name, needed) from None
                raise
            finally:
                self._staging = None
            self.accelerator.wait_for_everyone()

        evaluating = False
        last_eval_shape: dict | None = None

        def evaluate(self, *args, **kwargs):
            self.evaluating = True
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                self.evaluating = False

        def compute_loss(self, model, inputs, *args, **kwargs):
            out = super().compute_loss(model, inputs, *args, **kwargs)
            if model.training and _test_hook("NAN_LOSS_AT_STEP", self.state.global_step + 1) is not None:
                # fault injection for tests: one bad batch (a non-finite loss and gradients at that step only)
                out = (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")
            return out

        def prediction_step(self, model, inputs, *args, **kwargs):
            self.last_eval_shape = batch_shape(inputs)
            return super().prediction_step(model, inputs, *args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.last_batch_shape = batch_shape(inputs)
            if _test_hook("OOM_AT_STEP", self.state.global_step + 1) is not None:
                raise torch.cuda.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 2.00 GiB (simulated by LORATUI_TEST_OOM_AT_STEP)")
            nan_at = os.environ.get("LORATUI_TEST_NAN_AT_STEP")  # fault injection for tests (never set in normal use)
            above = os.environ.get("LORATUI_TEST_NAN_ABOVE_LR")  # STEP:LR: from STEP on, while the lr is above LR
            if above:
                at, _, lr = above.partition(":")
                if self.state.global_step + 1 >= int(at) and self.optimizer.param_groups[0]["lr"] > float(lr):
                    nan_at = "1"
            if nan_at and self.state.global_step + 1 >= int(nan_at):
                with torch.no_grad():  # weights that blew up, as a learning rate far too high leaves them
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
            return super().training_step(model, inputs, num_items_in_batch)

    return SafeSaveTrainer
