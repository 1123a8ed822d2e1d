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
from loratui.core.runs import EventWriter, RunDir, process_identity
from loratui.train.callbacks import StopRequest, progress_line
from loratui.train.closing import Closing
from loratui.train.recipe import Recipe
from loratui.train.failures import (  # noqa: F401 - DiskFullError re-exported
    DiskFullError, disk_full_error, explain, is_disk_full, is_out_of_memory,
)



class Engine(Recipe, Closing):
    """One training run. ``run()`` returns the process exit code."""

    def __init__(self, run: RunDir, *, resume: bool = False, echo: Callable[[str], None] | None = None):
        self.run_dir = run
        self.resume = resume
        self.echo = echo or (lambda line: print(line, flush=True))
        self.stop_request = StopRequest()
        self.events: EventWriter | None = None
        from loratui.train.watch import SpikeWatch

        self.spikes = SpikeWatch()  # loss spikes -> alert events
        self.early = None  # train.watch.EarlyStop when there is a held-out set
        self.early_stopped: int | None = None  # the step early stopping ended training at
        self._best: tuple[int, dict] | None = None  # (step, trainable weights on the CPU) of the best evaluation
        self.diverged: dict | None = None  # set by the callback when the loss or gradients stopped being finite
        self.rollbacks = 0  # train.on_diverge: rollback, how many so far
        self.fit = None  # the memory fit (loratui.train.fit.Fit) when the engine fitted the run to its card
        self.lock = None  # the run's lock (core.identity.RunLock), held while this engine runs
        self.cfg: RunConfig | None = None
        self.trainer = None
        self.model = None
        self.tokenizer = None
        self.last_eval_step = -1
        self.labels: list[str] | None = None
        self.n_eval = 0  # examples in each evaluation during training (the curve)
        self.full_eval = None  # the whole held-out set when the curve uses a slice of it (data.eval_samples)
        self.eval_final = False  # set while the closing evaluation on the whole held-out set runs
        self.last_eval: dict = {}
        self._cuda = False
        self.world = None  # loratui.train.distributed.World, set when the run starts
        self.strategy = "none"  # none | ddp | fsdp
        self._fsdp_args: tuple[bool, dict] | None = None
        self._head_gathered = False  # FSDP: the final norm gathers the LM head for the fused loss
        self.speed = None  # the resolved fast-path levers (loratui.train.speed.Speed)

    # -- events ------------------------------------------------------------------------------------------------
    def emit(self, kind: str, **data) -> dict:
        assert self.events is not None
        return self.events.emit(kind, **data)

    def progress(self, ev: dict) -> None:
        if ev["kind"] == "step":
            self.echo(progress_line(ev))
        elif ev["kind"] == "eval":
            shown = {k: ev[k] for k in ("eval_loss", "perplexity", "accuracy", "f1") if ev.get(k) is not None}
            where = f"final eval on all {ev['examples']} held-out examples" if ev.get("final") and self.full_eval \
                is not None else f"eval at step {ev['step']}"
            self.echo(f"{where}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))

    def emit_memory(self, step: int) -> None:
        if not self._cuda:  # a CPU run: the process's peak resident memory (one getrusage call, no sync)
            import resource

            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            self.emit("memory", step=step, device="cpu", host_peak_gb=round(peak_kib / 2**20, 3))
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
            name = signal.Signals(signum).name
            if req.training and req.stop:
                # already stopping, or writing a checkpoint/adapter: a kill here would leave it half-written
                req.ignored.append(name)
                self.echo(f"{name} again: ignored, already stopping; the adapter and checkpoint are saved first "
                          "(SIGKILL aborts without saving; the last complete checkpoint stays)")
                return
            if req.stop or not req.training:
                # a second signal, or nothing to save yet: stop now
                req.stop = True
                req.signal_name = signal.Signals(signum).name
                raise KeyboardInterrupt
            req.stop = True
            req.signal_name = signal.Signals(signum).name
            self.echo(f"{req.signal_name}: " + ("the training is done: the final evaluation ends, then the adapter is "
                                               "saved" if req.trained else
                                               "stopping after this step (adapter and checkpoint will be saved)"))

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
        from loratui.core.devices import plan_devices
        from loratui.train.distributed import world

        self.world = w = world()
        if not w.distributed:
            # one engine per run: the lock first (handed over by the launcher, or taken now), before anything is written;
            # under torchrun the supervisor holds it for every rank
            from loratui.core.identity import RunLock

            self.lock = RunLock.adopt(run.path)
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # NVML and CUDA number the cards alike
        if not w.distributed and "CUDA_VISIBLE_DEVICES" not in os.environ:
            # one process sees one card: the Trainer would otherwise spread it with DataParallel, batch multiplied
            os.environ.update(plan_devices(run.config()).env())
        if not w.main:  # rank 0 alone writes the run folder; the others keep quiet (their errors: ranks/)
            self.events = _SilentEvents()
            self.echo = lambda line: None
        else:
            self.events = EventWriter(run.events_path)
        self.install_signals()
        started = time.time()
        if w.main:
            # under torchrun the supervisor (loratui engine RUN --nproc N) is the run's process: stop and liveness go
            # to it, and it forwards signals to every rank
            sup = os.environ.get("LORATUI_SUPERVISOR_PID")
            run.write_status(state="running", **process_identity(int(sup) if sup else None),
                             started=run.read_status().get("started") or round(started, 3), ended=None)
        try:
            return self._train()
        except KeyboardInterrupt:
            step = self._step()
            when = f"at step {step} without saving" if self.stop_request.training else "before training began"
            self.emit("stopped", step=step, adapter=None, checkpoint=None,
                      message=f"stopped by {self.stop_request.signal_name or 'interrupt'} {when}")
            run.write_status(state="stopped", ended=round(time.time(), 3))
            self.echo(f"stopped {when}: nothing saved")
            return 130
        except LoratuiError as err:
            return self._fail(err.to_dict() | {"error": type(err).__name__}, str(err))
        except Exception as err:  # noqa: BLE001 - every failure becomes a 'failed' event with a hint
            traceback.print_exc()
            if is_out_of_memory(err):
                info = self._oom_report(err)
                return self._fail(info, f"{info['message']} ({info['hint']})")
            if is_disk_full(err):
                err = disk_full_error(run.path, "the run", 0)
                return self._fail(err.to_dict(), str(err))
            message, hint = explain(err, self.cfg)
            return self._fail({"error": type(err).__name__, "message": message, "hint": hint, "field": None},
                              f"{message} ({hint})" if hint else message)
        finally:
            if self.events:
                self.events.close()
            if getattr(self, "lock", None) is not None:
                self.lock.release()

    def _fail(self, info: dict, line: str) -> int:
        if self.world.distributed:
            from loratui.train.distributed import write_rank_error

            try:
                write_rank_error(self.run_dir.path, self.world, str(info.get("error") or "error"), line)
            except OSError:
                pass
            if not self.world.main:
                print(f"rank {self.world.rank} failed: {line}", file=sys.stderr, flush=True)
                return 1
        # on a full disk even these small writes can fail: the run must still not be left 'running'
        for attempt in (lambda: self.emit("failed", step=self._step(), **info),
                        lambda: self.run_dir.write_status(state="failed", ended=round(time.time(), 3), error=line)):
            try:
                attempt()
            except OSError as err:
                self.echo(f"could not record the failure ({err.strerror or err})")
        self.echo(f"failed: {line}")
        return 1

    @staticmethod
    def _planned_steps(trainer, args, fallback: int) -> int:
        """The Trainer's own step count for this run (per process under torchrun; epochs over the real dataloader),
        so a checkpoint at the last step is recognised whatever the world size."""
        try:
            return int(trainer.set_initial_training_values(args, trainer.get_train_dataloader())[-1])
        except Exception:  # noqa: BLE001 - an iterable dataset without a length: the estimate will do
            return fallback

    def _pick_checkpoint(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest complete checkpoint to resume from, and the newer incomplete ones passed over (and why)."""
        from loratui.core import checkpoints as ck

        run = self.run_dir
        if int(os.environ.get("RANK", "0")) == 0:  # one writer of the run folder
            ck.clean_leftovers(run.checkpoints_dir)  # staging folders of a killed save
        if not self.resume:
            return None, []
        return ck.latest_complete(run.checkpoints_dir)  # none: it trains again from step 0 (``_resumed``)

    def _oom_report(self, err: BaseException) -> dict:
        """What hit out-of-memory: the step, the batch shape, the batch settings, the checkpoint to retry from."""
        t = self.cfg.train if self.cfg else None
        evaluating = getattr(self.trainer, "evaluating", False)
        shape = getattr(self.trainer, "last_eval_shape" if evaluating else "last_batch_shape", None) or {}
        main = shape.get("input_ids") or next(iter(shape.values()), None)
        step = self._step() + (0 if evaluating else 1)
        ck = self.run_dir.latest_checkpoint()
        text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        where = (f"in the evaluation at step {step} with an eval batch of shape {main or '?'} (eval batch "
                 f"{(t.eval_batch_size or t.batch_size) if t else '?'}" if evaluating
                 else f"at step {step} with a batch of shape {main or '?'} (micro-batch {t.batch_size if t else '?'}")
        message = f"out of GPU memory {where}, grad_accum {t.grad_accum if t else '?'}): {text}"
        hint = ("retry with half the micro-batch and twice the grad_accum (same effective batch)"
                + (f" from {ck.name}" if ck else "") + ", or enable train.gradient_checkpointing, lower "
                "data.max_length, or use method qlora")
        return {"error": "OutOfMemoryError", "message": message, "hint": hint, "field": "train.batch_size",
                "oom": True, "oom_step": step, "batch_shape": shape, "oom_in": "eval" if evaluating else "train",
                "micro_batch": t.batch_size if t else None, "grad_accum": t.grad_accum if t else None,
                "checkpoint": str(ck) if ck else None}

    def _fused_ce(self) -> bool:
        """Liger's fused linear cross-entropy reads lm_head's weight directly: under FSDP a PEFT model's head is
        gathered by the final norm's hook (distributed.unshard_head_for_fused_ce); without that hook the weight
        would still be a sharded DTensor there (measured on 2x H200: "mixed torch.Tensor and DTensor"), so that one
        kernel stays off; the others (RMSNorm, RoPE, SwiGLU) run inside the gathered decoder layers."""
        return self.strategy != "fsdp" or self._head_gathered or not self.cfg.uses_lora

    def _gpus(self) -> list[dict]:
        """The cards of this run (this node), as NVML numbers and names them."""
        from loratui.core.gpu import query_gpus

        return [{"index": g.index, "name": g.name, "memory_total": g.memory_total} for g in query_gpus()]

    def _step(self) -> int:
        return self.trainer.state.global_step if self.trainer is not None else 0

    def _train(self) -> int:
        """The recipe: place this process, set up data, model and method, build the Trainer, train, save."""
        self.emit("phase", phase="checking")  # first: a new engine process's part of the run starts here (the fold)
        checkpoint, skipped = self._place()
        pre = self._preflight()
        self._fit_memory()
        self.emit("phase", phase="preparing data")
        train_ds, val_ds, stats = self._setup_data(pre)
        self.emit("phase", phase="loading model")
        model = self._setup_model(pre, has_eval=val_ds is not None)
        trainer = self._build_trainer(model, pre.precision, train_ds, val_ds)
        max_steps = self._announce(checkpoint, pre.precision, train_ds, val_ds, stats)
        done = self.resume and self._resumed(checkpoint, skipped, max_steps)
        self.emit("phase", phase="training")
        t0 = time.time()
        result = self._finish_from(checkpoint, max_steps) if done else \
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        while self.diverged is not None and not self.stop_request.stop:
            again = self._roll_back()
            if again is None:
                break
            result = again
        if self.diverged is not None:
            return self._fail_diverged()
        if self.early_stopped is not None:
            self._restore_best()
        # a stop at the last step or later (the final evaluation: every rank runs it whole) leaves a finished run
        self.stop_request.trained = trainer.state.global_step >= max_steps or self.early_stopped is not None
        if val_ds is not None and not self.stop_request.stop and (
                self.full_eval is not None or self.last_eval_step != trainer.state.global_step):
            self._final_eval(trainer)
        self.emit("phase", phase="saving")
        out = self.save_output()
        if os.environ.get("LORATUI_TEST_RANK_WEIGHTS") and self.world.distributed:
            from loratui.train.distributed import dump_trainable

            dump_trainable(trainer.model, self.run_dir.path, self.world, trainer.state.global_step)
        return self._report(out, result, time.time() - t0)

    def _announce(self, checkpoint, precision: str, train_ds, val_ds, stats) -> int:
        """The ``started`` event and line: what runs, where, on how many cards, with which batch. Returns the
        planned optimizer steps, as the Trainer counts them (per process under torchrun)."""
        import torch

        from loratui.train import models

        cfg, w, sp, run = self.cfg, self.world, self.speed, self.run_dir
        trainable, total = models.count_trainable(self.model)
        max_steps = self._planned_steps(self.trainer, self.args,
                                        cfg.train.max_steps or _steps_for(len(train_ds), cfg, w.size))
        device = torch.cuda.get_device_name() if self._cuda else "cpu"
        effective = cfg.train.batch_size * w.size * cfg.train.grad_accum
        n_val = len(val_ds) if val_ds is not None else 0
        n_final = len(self.full_eval) if self.full_eval is not None else n_val
        self.emit("started", run=run.name, model=cfg.model.name, method=cfg.method.kind,
                  objective=cfg.method.objective, task=cfg.model.task,
                  trainable_params=trainable, total_params=total, train_examples=len(train_ds),
                  eval_examples=n_val, final_eval_examples=n_final, max_steps=max_steps,
                  epochs=cfg.train.epochs if not cfg.train.max_steps else None, device=device, precision=precision,
                  labels=self.labels, data_stats=stats, resumed=checkpoint is not None,
                  speed=sp.as_event() | {"fused_cross_entropy": sp.liger and self._fused_ce()},
                  world_size=w.size, distributed=self.strategy, gpus=self._gpus(),
                  per_device_batch=cfg.train.batch_size, grad_accum=cfg.train.grad_accum, effective_batch=effective,
                  logging_steps=cfg.train.logging_steps, eval_steps=cfg.train.eval_steps,  # the watchdog's pace
                  fit=self.fit.as_event() if self.fit is not None else None)
        self.echo(f"{run.name}: {cfg.method.kind} on {cfg.model.name}, trainable params: {trainable:,} of "
                  f"{total:,} ({100 * trainable / total:.4f}%), {len(train_ds)} train / {n_val} eval examples"
                  f"{f' (all {n_final} at the end)' if n_final != n_val else ''}, "
                  f"{max_steps} steps on {device}"
                  + (f" x {w.size} ({self.strategy.upper()}), batch {cfg.train.batch_size} a card = "
                     f"{effective} a step" if w.distributed else ""))
        return max_steps

    def _resumed(self, checkpoint: Path | None, skipped, max_steps: int) -> bool:
        """Say where the run resumes from (and which newer checkpoints were passed over). True when that
        checkpoint is already at the last planned step. None: no complete checkpoint (stopped or crashed before the
        first, or only unfinished saves): the run trains again from step 0 in its folder, as Runs' resume says, and
        the steps logged before are trained again (one fold drops them)."""
        step = int(checkpoint.name.split("-")[-1]) if checkpoint is not None else 0
        self.emit("resumed", checkpoint=str(checkpoint) if checkpoint is not None else None, step=step,
                  skipped=[{"path": str(p), "reason": why} for p, why in skipped])
        for p, why in skipped:
            self.echo(f"skipping {p.name}: {why}")
        if checkpoint is None:
            self.echo("no checkpoint to resume from: training again from step 0")
            return False
        self.echo(f"resuming from {checkpoint}")
        return step >= max_steps

    def _finish_from(self, checkpoint: Path, max_steps: int):
        """The checkpoint is at the last planned step: training again would run past max_steps and restart the
        schedule. Take its weights and state, and finish."""
        from transformers.trainer_callback import TrainerState

        trainer = self.trainer
        self.echo(f"{checkpoint.name} is already at the last step ({max_steps}/{max_steps}): nothing left to train")
        trainer._load_from_checkpoint(str(checkpoint))
        trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        return None


class _SilentEvents:
    """Ranks other than 0 build their events (the callbacks read them) but write nothing."""

    def emit(self, kind: str, **data) -> dict:
        return {"kind": kind, "time": round(time.time(), 3), **data}

    def close(self) -> None:
        pass


def _steps_for(n_examples: int, cfg: RunConfig, world_size: int = 1) -> int:
    """Optimizer steps for the configured epochs (the fallback when the Trainer cannot count its dataloader)."""
    per_epoch = math.ceil(n_examples / (cfg.train.batch_size * world_size))
    updates = max(1, math.ceil(per_epoch / cfg.train.grad_accum))
    return max(1, math.ceil(updates * cfg.train.epochs))


def main(run_path: str, resume: bool = False) -> int:
    """Entry for the detached engine process."""
    run = RunDir(Path(run_path))
    try:
        return Engine(run, resume=resume).run()
    except LoratuiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
