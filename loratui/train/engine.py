"""The training engine: one run, in this process, writing events to the run directory.

Started detached by the app (``python -m loratui engine RUN_DIR``) or in the foreground by ``loratui train``.
Only cheap work happens in the Trainer callbacks (a dict, a JSON line): heavy Python here would slow every step.
SIGINT/SIGTERM stop gracefully (checkpoint + adapter saved, ``stopped`` event); SIGUSR1 saves a checkpoint now.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from loratui.core.config import RunConfig
from loratui.core.errors import LoratuiError, RunError
from loratui.core.runs import EventWriter, RunDir, process_start_time

OPTIMIZERS = {
    "adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch_fused", "paged_adamw_8bit": "paged_adamw_8bit",
    "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_32bit": "paged_adamw_32bit", "adafactor": "adafactor", "sgd": "sgd",
}


class StopRequest:
    """Set from signal handlers; read by the Trainer callback at each step end."""

    def __init__(self) -> None:
        self.stop = False
        self.checkpoint = False
        self.signal_name = ""
        self.training = False


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(ev: dict) -> str:
    parts = [f"step {ev['step']}/{ev.get('max_steps') or '?'}", f"epoch {ev.get('epoch', 0):.2f}"]
    if ev.get("loss") is not None:
        parts.append(f"loss {ev['loss']:.4f}")
    if ev.get("lr") is not None:
        parts.append(f"lr {ev['lr']:.2e}")
    if ev.get("tokens_per_s"):
        parts.append(f"{ev['tokens_per_s']:,.0f} tok/s")
    if ev.get("eta_s") is not None:
        parts.append(f"ETA {_fmt_time(ev['eta_s'])}")
    return " | ".join(parts)


def make_callback(engine: "Engine"):
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.last_t = self.t0
            self.last_tokens = 0
            self.last_step_t: float | None = None
            self.start_step = 0

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.last_t = time.monotonic()
            self.start_step = state.global_step
            self.last_tokens = state.num_input_tokens_seen or 0
            engine.stop_request.training = True
            if args.eval_on_start and state.global_step == 0 and engine.n_eval:
                engine.emit("phase", phase="evaluating the base model")
                engine.echo(f"evaluating the base model on {engine.n_eval} examples...")

        def on_step_end(self, args, state, control, **kw):
            req = engine.stop_request
            if req.checkpoint:
                req.checkpoint = False
                control.should_save = True
            if req.stop:
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            now = time.monotonic()
            if "loss" in logs or "train_loss" not in logs and "eval_loss" not in logs and "learning_rate" in logs:
                tokens = state.num_input_tokens_seen or 0
                dt = now - self.last_t
                tps = (tokens - self.last_tokens) / dt if dt > 0 and tokens > self.last_tokens else None
                self.last_t, self.last_tokens = now, tokens
                done = state.global_step - self.start_step
                elapsed = now - self.t0
                eta = (elapsed / done) * (state.max_steps - state.global_step) if done > 0 else None
                ev = engine.emit(
                    "step", step=state.global_step, max_steps=state.max_steps, epoch=round(state.epoch or 0, 4),
                    loss=logs.get("loss"), lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                    tokens_per_s=round(tps, 1) if tps else None, tokens_seen=tokens, elapsed=round(elapsed, 2),
                    eta_s=round(eta, 1) if eta is not None else None)
                engine.progress(ev)
                engine.emit_memory(state.global_step)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            metrics = metrics or {}
            data = {k[len("eval_"):] if k.startswith("eval_") and k != "eval_loss" else k: v
                    for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
            loss = metrics.get("eval_loss")
            if loss is not None and engine.cfg.model.task == "causal-lm":
                data["perplexity"] = round(math.exp(min(loss, 50)), 4)
            engine.last_eval_step = state.global_step
            ev = engine.emit("eval", step=state.global_step, epoch=round(state.epoch or 0, 4), **data)
            engine.progress(ev)
            if state.global_step == 0:
                engine.emit("phase", phase="training")

        def on_save(self, args, state, control, **kw):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            engine.emit("checkpoint", step=state.global_step, path=str(path))

    return EventsCallback()


class Engine:
    """One training run. ``run()`` returns the process exit code."""

    def __init__(self, run: RunDir, *, resume: bool = False, echo: Callable[[str], None] | None = None):
        self.run_dir = run
        self.resume = resume
        self.echo = echo or (lambda line: print(line, flush=True))
        self.stop_request = StopRequest()
        self.events: EventWriter | None = None
        self.cfg: RunConfig | None = None
        self.trainer = None
        self.model = None
        self.tokenizer = None
        self.last_eval_step = -1
        self.labels: list[str] | None = None
        self.n_eval = 0
        self._cuda = False

    # -- events ------------------------------------------------------------------------------------------------
    def emit(self, kind: str, **data) -> dict:
        assert self.events is not None
        return self.events.emit(kind, **data)

    def progress(self, ev: dict) -> None:
        if ev["kind"] == "step":
            self.echo(progress_line(ev))
        elif ev["kind"] == "eval":
            shown = {k: ev[k] for k in ("eval_loss", "perplexity", "accuracy", "f1") if ev.get(k) is not None}
            self.echo(f"eval at step {ev['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))

    def emit_memory(self, step: int) -> None:
        if not self._cuda:
            return
        import torch

        self.emit("memory", step=step, device=torch.cuda.get_device_name(),
                  allocated_gb=round(torch.cuda.memory_allocated() / 2**30, 3),
                  reserved_gb=round(torch.cuda.memory_reserved() / 2**30, 3),
                  peak_allocated_gb=round(torch.cuda.max_memory_allocated() / 2**30, 3))

    # -- signals -----------------------------------------------------------------------------------------------
    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_stop(signum, frame):
            req = self.stop_request
            if req.stop or not req.training:
                # a second signal, or nothing to save yet: stop now
                req.stop = True
                req.signal_name = signal.Signals(signum).name
                raise KeyboardInterrupt
            req.stop = True
            req.signal_name = signal.Signals(signum).name
            self.echo(f"{req.signal_name}: stopping after this step (adapter and checkpoint will be saved)")

        def on_checkpoint(signum, frame):
            self.stop_request.checkpoint = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, on_checkpoint)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # survive a dropped SSH session

    # -- the run -----------------------------------------------------------------------------------------------
    def run(self) -> int:
        run = self.run_dir
        if not run.config_path.is_file():
            raise RunError(f"{run.path} is not a run folder (no config.yaml)", field="run",
                           hint="give a folder under your runs folder")
        self.events = EventWriter(run.events_path)
        self.install_signals()
        started = time.time()
        run.write_status(state="running", pid=os.getpid(), pid_started=process_start_time(os.getpid()),
                         started=run.read_status().get("started") or round(started, 3), ended=None)
        try:
            return self._train()
        except KeyboardInterrupt:
            self.emit("stopped", step=self._step(), adapter=None, checkpoint=None,
                      message=f"stopped by {self.stop_request.signal_name or 'interrupt'} before training began")
            run.write_status(state="stopped", ended=round(time.time(), 3))
            self.echo("stopped before training began: nothing saved")
            return 130
        except LoratuiError as err:
            return self._fail(err.to_dict() | {"error": type(err).__name__}, str(err))
        except Exception as err:  # noqa: BLE001 - every failure becomes a 'failed' event with a hint
            traceback.print_exc()
            message, hint = explain(err, self.cfg)
            return self._fail({"error": type(err).__name__, "message": message, "hint": hint, "field": None},
                              f"{message} ({hint})" if hint else message)
        finally:
            if self.events:
                self.events.close()

    def _fail(self, info: dict, line: str) -> int:
        self.emit("failed", step=self._step(), **info)
        self.run_dir.write_status(state="failed", ended=round(time.time(), 3), error=line)
        self.echo(f"failed: {line}")
        return 1

    def _step(self) -> int:
        return self.trainer.state.global_step if self.trainer is not None else 0

    def _train(self) -> int:
        import torch

        from loratui.train import data, models, preflight

        run = self.run_dir
        self.cfg = cfg = run.config()
        self._cuda = torch.cuda.is_available()
        checkpoint = None
        if self.resume:
            checkpoint = run.latest_checkpoint()
            if checkpoint is None:
                raise RunError(f"{run.path} has no checkpoint to resume from", field="run",
                               hint="start it again with: loratui train " + str(run.config_path))
        self.emit("phase", phase="checking")
        pre = preflight.check(cfg, data=False)
        self.emit("phase", phase="preparing data")
        tokenizer = models.load_tokenizer(cfg, pre.resolved)
        data.prepare_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        train_raw, val_raw = data.load_splits(cfg)
        labels = data.label_names(cfg, train_raw) if cfg.model.task == "seq-cls" else None
        self.labels = labels
        train_ds, val_ds, stats = data.tokenize_splits(cfg, tokenizer, train_raw, val_raw)
        self.emit("phase", phase="loading model")
        model = models.load_model(cfg, pre.resolved, pre.precision, labels)
        model.config.use_cache = False  # no KV cache in training (packed examples must not attend across)
        if cfg.train.gradient_checkpointing and not cfg.quantized:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        model = models.apply_method(cfg, model, gradient_checkpointing=cfg.train.gradient_checkpointing)
        self.model = model
        trainable, total = models.count_trainable(model)
        args = self._training_args(pre.precision, has_eval=val_ds is not None)
        from transformers import Trainer

        self.trainer = trainer = Trainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer,
            data_collator=data.make_collator(cfg, tokenizer),
            compute_metrics=classification_metrics(cfg) if cfg.model.task == "seq-cls" and val_ds is not None else None,
            callbacks=[make_callback(self)],
        )
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)  # our own progress line replaces its raw dict prints
        trainer.remove_callback(ProgressCallback)
        self.n_eval = len(val_ds) if val_ds is not None else 0
        max_steps = args.max_steps if args.max_steps > 0 else _steps_for(len(train_ds), cfg)
        device = torch.cuda.get_device_name() if self._cuda else "cpu"
        self.emit("started", run=run.name, model=cfg.model.name, method=cfg.method.kind, task=cfg.model.task,
                  trainable_params=trainable, total_params=total, train_examples=len(train_ds),
                  eval_examples=len(val_ds) if val_ds is not None else 0, max_steps=max_steps,
                  epochs=cfg.train.epochs if not cfg.train.max_steps else None, device=device, precision=pre.precision,
                  labels=labels, data_stats=stats, resumed=checkpoint is not None)
        self.echo(f"{run.name}: {cfg.method.kind} on {cfg.model.name}, trainable params: {trainable:,} of "
                  f"{total:,} ({100 * trainable / total:.4f}%), {len(train_ds)} train / "
                  f"{len(val_ds) if val_ds is not None else 0} eval examples, {max_steps} steps on {device}")
        if checkpoint is not None:
            step = int(checkpoint.name.split("-")[-1])
            self.emit("resumed", checkpoint=str(checkpoint), step=step)
            self.echo(f"resuming from {checkpoint}")
        self.emit("phase", phase="training")
        t0 = time.time()
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        stopped = self.stop_request.stop
        eval_metrics = {}
        if val_ds is not None and not stopped and self.last_eval_step != trainer.state.global_step:
            eval_metrics = trainer.evaluate()
        self.emit("phase", phase="saving")
        out = self.save_output()
        if os.environ.get("LORATUI_PROBE"):
            self.save_probe()
        step = trainer.state.global_step
        if stopped:
            ck = run.latest_checkpoint()
            self.emit("stopped", step=step, adapter=str(out), checkpoint=str(ck) if ck else None,
                      message=f"stopped by {self.stop_request.signal_name or 'request'} at step {step}")
            run.write_status(state="stopped", ended=round(time.time(), 3), step=step)
            self.echo(f"stopped at step {step}: adapter saved to {out}; resume with: loratui train --resume {run.path}")
            return 0
        self.emit("finished", step=step, adapter=str(out), runtime_s=round(time.time() - t0, 2),
                  train_loss=result.training_loss, eval_loss=eval_metrics.get("eval_loss"))
        run.write_status(state="finished", ended=round(time.time(), 3), step=step)
        self.echo(f"finished at step {step}: saved to {out}")
        return 0

    def _training_args(self, precision: str, has_eval: bool):
        from transformers import TrainingArguments

        t = self.cfg.train
        eval_strategy = "no" if not has_eval else ("steps" if t.eval_steps else "epoch")
        return TrainingArguments(
            output_dir=str(self.run_dir.checkpoints_dir),
            num_train_epochs=t.epochs,
            max_steps=t.max_steps or -1,
            per_device_train_batch_size=t.batch_size,
            per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
            gradient_accumulation_steps=t.grad_accum,
            learning_rate=t.lr,
            lr_scheduler_type=t.scheduler,
            warmup_steps=t.warmup_steps or t.warmup_ratio,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            logging_steps=t.logging_steps,
            logging_first_step=True,
            eval_strategy=eval_strategy,
            eval_steps=t.eval_steps,
            eval_on_start=t.eval_on_start and has_eval and not self.resume,
            save_strategy="steps" if t.save_steps else "epoch",
            save_steps=t.save_steps or 500,
            save_total_limit=t.save_total_limit,
            gradient_checkpointing=t.gradient_checkpointing and not self.cfg.quantized,
            gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not self._cuda,
            optim=OPTIMIZERS[t.optimizer],
            seed=t.seed,
            data_seed=t.seed,
            dataloader_num_workers=t.dataloader_workers,
            report_to="none",
            disable_tqdm=True,
            include_num_input_tokens_seen="non_padding",
            save_only_model=False,
        )

    def save_output(self) -> Path:
        """Save the adapter (LoRA methods) or the trained model (full / head-only) plus tokenizer and metadata."""
        import json

        from loratui.train.models import count_trainable

        cfg = self.cfg
        out = self.run_dir.adapter_dir if cfg.uses_lora else self.run_dir.path / "model"
        self.trainer.save_model(str(out))
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
        return out


    def save_probe(self) -> None:
        """Logits of the trained model on a fixed input (bench/tests compare a reloaded adapter against them)."""
        import torch

        # accelerate wraps forward in autocast for mixed precision: unwrap to compare like-for-like with a reload
        model = self.trainer.accelerator.unwrap_model(self.trainer.model, keep_fp32_wrapper=False).eval()
        ids = torch.arange(1, 33).unsqueeze(0) * 37 % max(8, model.config.vocab_size - 1) + 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device)).logits.float().cpu()
        probe = {"input_ids": ids, "logits": logits}
        if os.environ.get("LORATUI_PROBE") == "reload":  # diagnostics: reload the adapter in this same process
            from peft import PeftModel

            from loratui.train import models

            base = models.load_model(self.cfg, models.resolve_model(self.cfg.model), models.choose_precision(self.cfg))
            if not self.cfg.quantized:
                base = base.to(model.device)
            if self.cfg.quantized:
                from peft import prepare_model_for_kbit_training

                base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
            again = PeftModel.from_pretrained(base, str(self.run_dir.adapter_dir)).eval()
            with torch.no_grad():
                probe["same_process_logits"] = again(input_ids=ids.to(model.device)).logits.float().cpu()
                probe["trained_again_logits"] = model(input_ids=ids.to(model.device)).logits.float().cpu()
        torch.save(probe, self.run_dir.path / "probe.pt")


def _steps_for(n_examples: int, cfg: RunConfig) -> int:
    per_epoch = math.ceil(n_examples / cfg.train.batch_size)
    updates = max(1, math.ceil(per_epoch / cfg.train.grad_accum))
    return max(1, math.ceil(updates * cfg.train.epochs))


def classification_metrics(cfg: RunConfig):
    import numpy as np

    from loratui.train.metrics import load_metric

    accuracy, f1 = load_metric("accuracy"), load_metric("f1")
    average = "binary" if cfg.model.num_labels == 2 else "macro"

    def compute(eval_pred):
        logits, labels = eval_pred
        if isinstance(logits, tuple):
            logits = logits[0]
        preds = np.argmax(logits, axis=-1)
        out = accuracy.compute(predictions=preds, references=labels)
        out.update(f1.compute(predictions=preds, references=labels, average=average))
        return out

    return compute


def explain(err: Exception, cfg: RunConfig | None) -> tuple[str, str | None]:
    """One-line message and a hint for an unexpected failure."""
    name = type(err).__name__
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else name
    if "OutOfMemory" in name or "out of memory" in text.lower():
        bs = cfg.train.batch_size if cfg else "?"
        hint = (f"halve train.batch_size (now {bs}) and double train.grad_accum, enable "
                "train.gradient_checkpointing, lower data.max_length, or use method qlora")
        return f"out of GPU memory: {text}", hint
    if "CUDA" in text and "device-side" in text:
        return text, "check labels are within model.num_labels and token ids within the vocabulary"
    if isinstance(err, (ValueError, TypeError, KeyError)):
        return f"{name}: {text}", "see engine.log for the traceback"
    return f"{name}: {text}", "see engine.log for the traceback"


def main(run_path: str, resume: bool = False) -> int:
    """Entry for the detached engine process."""
    run = RunDir(Path(run_path))
    try:
        return Engine(run, resume=resume).run()
    except LoratuiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
