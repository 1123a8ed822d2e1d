"""How a run ends: the adapter (or model) written whole, the closing event and status, early stopping's best
weights, and a diverged run's failure. A mixin of :class:`loratui.train.engine.Engine` (its state is the engine's)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from loratui.core.fileio import respect_umask
from loratui.train.failures import disk_full_error, is_disk_full
from loratui.train.trainers import _fsync, _fsync_tree, _test_hook


class Closing:
    """The engine's closing steps (see the module's docstring)."""

    def keep_best(self, step: int) -> None:
        """Early stopping: a copy of the trainable weights at the best evaluation (LoRA: megabytes, on the CPU),
        so the adapter can hold them. Full fine-tuning and sharded runs keep none (the last weights are saved)."""
        if self.cfg.train.early_stopping_patience is None or not self.cfg.uses_lora or self.strategy == "fsdp":
            return
        self._best = (step, {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters()
                             if p.requires_grad})

    def _restore_best(self) -> None:
        import torch

        if self._best is None:
            self.echo(f"early stopping at step {self.early_stopped}: the last weights are saved (no copy of the best "
                      "is kept for this method)")
            return
        step, weights = self._best
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in weights:
                    param.copy_(weights[name].to(param.device))
        self.echo(f"early stopping at step {self.early_stopped}: the adapter holds step {step}'s weights (its best "
                  "evaluation)")

    def _drop_bad_checkpoints(self) -> None:
        """Checkpoints from the first bad step on hold non-finite weights: they go."""
        from loratui.core import checkpoints as ck

        for path in sorted(self.run_dir.checkpoints_dir.glob("checkpoint-*")):
            step = ck.checkpoint_step(path)
            if step is not None and step >= self.diverged["first_bad_step"]:
                ck.remove_folder(path)  # renamed away first: never a visible checkpoint without its weights

    def _roll_back(self):
        """train.on_diverge: rollback. Back to the last good checkpoint, the learning rate (its schedule) times
        rollback_lr_factor, training again from there; None when there is nothing to roll back to (or no roll-back
        left), and the run fails as it would have. Otherwise the Trainer's result."""
        t, d = self.cfg.train, self.diverged
        if t.on_diverge != "rollback" or self.rollbacks >= t.max_rollbacks or self.world.distributed:
            return None
        self._drop_bad_checkpoints()
        good = self.run_dir.latest_checkpoint()
        if good is None:
            return None
        from loratui.core import checkpoints as ck

        self.rollbacks += 1
        trainer = self.trainer
        trainer.lr_factor *= t.rollback_lr_factor
        lr = t.lr * trainer.lr_factor
        step = ck.checkpoint_step(good)
        message = (f"training diverged at step {d['first_bad_step']}: rolled back to {good.name}, learning rate "
                   f"{lr:g} (x{trainer.lr_factor:g}), roll-back {self.rollbacks} of {t.max_rollbacks}")
        self.emit("alert", step=d["step"], alert="rollback", message=message, from_step=step,
                  lr_factor=trainer.lr_factor)
        self.emit("resumed", checkpoint=str(good), step=step, skipped=[])
        self.echo(f"alert: {message}")
        self.diverged = None
        for cb in trainer.callback_handler.callbacks:
            if hasattr(cb, "bad_logs"):
                cb.bad_logs, cb.first_bad = 0, None
        return trainer.train(resume_from_checkpoint=str(good))

    def _fail_diverged(self) -> int:
        """Training diverged (the callback stopped it): checkpoints from the first bad step on hold non-finite
        weights and go; the run fails naming the step and the likely cause; no adapter is saved."""
        d, t = self.diverged, self.cfg.train
        self._drop_bad_checkpoints()
        what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (("loss", d["loss"]), ("grad_norm", d["grad_norm"]))
                         if v is not None)
        if self.args.fp16:
            cause = "fp16 overflowed (set train.precision: bf16 on a card that has it, or fp32)"
        elif t.lr > 1e-3:
            cause = f"the learning rate {t.lr:g} is likely too high (LoRA trains at 1e-4 to 3e-4: lower train.lr)"
        else:
            cause = (f"a data row near step {d['first_bad_step']} or the learning rate {t.lr:g} (lower train.lr, or "
                     "check the data)")
        good = self.run_dir.latest_checkpoint()
        keep = f"; {good.name} is kept (resume from it with a lower train.lr)" if good else ""
        if self.rollbacks:
            keep += f"; after {self.rollbacks} roll-back(s) to a lower learning rate"
        elif t.on_diverge == "rollback" and good is None:
            keep += "; no checkpoint from before it to roll back to (save more often: train.save_steps)"
        message = (f"training diverged at step {d['first_bad_step']}: {what} for {t.max_bad_steps} logged step(s) in a "
                   f"row; {cause}{keep}")
        return self._fail({"error": "Diverged", "message": message, "hint": cause, "field": "train.lr",
                           "first_bad_step": d["first_bad_step"]}, message)

    def _report(self, out: Path, result, seconds: float) -> int:
        """The closing event and status: ``stopped`` (resumable) or ``finished`` with the last evaluation."""
        run, step = self.run_dir, self.trainer.state.global_step
        if self.stop_request.stop and not self.stop_request.trained:
            ck = run.latest_checkpoint()
            self.emit("stopped", step=step, adapter=str(out), checkpoint=str(ck) if ck else None,
                      message=f"stopped by {self.stop_request.signal_name or 'request'} at step {step}")
            run.write_status(state="stopped", ended=round(time.time(), 3), step=step)
            self.echo(f"stopped at step {step}: adapter saved to {out}; resume with: loratui train --resume {run.path}")
            return 0
        best = self._best[0] if self.early_stopped is not None and self._best is not None else None
        self.emit("finished", step=step, adapter=str(out), runtime_s=round(seconds, 2), best_step=best,
                  early_stopped=self.early_stopped,
                  train_loss=result.training_loss if result is not None else None,
                  eval_loss=self.last_eval.get("eval_loss"), eval=self.last_eval or None)
        run.write_status(state="finished", ended=round(time.time(), 3), step=step)
        self.echo(f"finished at step {step}: saved to {out}")
        return 0

    def save_output(self) -> Path:
        """Save the adapter (LoRA methods) or the trained model (full / head-only) plus tokenizer and metadata."""
        from loratui.train.models import count_trainable

        import shutil

        from loratui.core import checkpoints as ck

        cfg = self.cfg
        out = self.run_dir.adapter_dir if cfg.uses_lora else self.run_dir.path / "model"
        # written beside, then renamed: a kill or a full disk never leaves a half adapter under the real name
        tmp = out.with_name(f".{out.name}.partial")
        main = self.trainer.args.should_save
        req = self.stop_request
        req.saving = True
        try:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            self.trainer.save_model(str(tmp))
            if main:
                self._write_output_meta(tmp, count_trainable)
                nap = _test_hook("SAVE_SLEEP", "adapter")
                if nap:
                    self.echo(f"test hook: sleeping {nap:g}s inside the save of {out.name}")
                    time.sleep(nap)
                ck.write_marker(tmp)
                respect_umask(tmp)
                _fsync_tree(tmp)
            self.trainer.accelerator.wait_for_everyone()
            if main:
                old = None
                if out.exists():
                    old = out.with_name(f".{out.name}.old-{os.getpid()}")
                    os.replace(out, old)
                os.replace(tmp, out)
                _fsync(out.parent)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        except Exception as err:
            written = ck.folder_bytes(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(err, out.parent):
                raise disk_full_error(out.parent, out.name, written + 2**20) from None
            raise
        finally:
            req.saving = False
        return out

    def _write_output_meta(self, out: Path, count_trainable) -> None:
        import json

        cfg = self.cfg
        trainable, total = count_trainable(self.trainer.model)
        meta = {
            "run": self.run_dir.name, "base_model": cfg.model.name, "task": cfg.model.task,
            "method": cfg.method.kind, "num_labels": cfg.model.num_labels if cfg.model.task == "seq-cls" else None,
            "labels": self.labels,
            "trainable_params": trainable, "total_params": total, "step": self.trainer.state.global_step,
            "quantization": cfg.method.quant_type if cfg.method.kind == "qlora" else (
                "int8" if cfg.method.kind == "lora-8bit" else None),
            "saved": round(time.time(), 3),
        }
        (out / "loratui.json").write_text(json.dumps(meta, indent=1))
