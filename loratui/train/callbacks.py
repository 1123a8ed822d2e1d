"""The engine's Trainer callback and the stop request it reads (signals set it; every rank agrees on it)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback

from loratui.core.fmt import format_duration, format_lr
from loratui.core.preference import reward_fields

if TYPE_CHECKING:
    from loratui.train.engine import Engine


CHOSEN_DROP_NATS = 5.0  # the chosen answers' log-likelihood this far below the reference's: an alert (DPO, KTO)


class StopRequest:
    """Set from signal handlers; read by the Trainer callback at each step end."""

    def __init__(self) -> None:
        self.stop = False
        self.checkpoint = False
        self.signal_name = ""
        self.training = False
        self.saving = False  # a checkpoint or the final adapter is being written
        self.trained = False  # every planned step is trained (or early stopping ended it): a stop leaves nothing to do
        self.ignored: list[str] = []  # signals that arrived while stopping/saving (noted, not acted on)


def progress_line(ev: dict) -> str:
    parts = [f"step {ev['step']}/{ev.get('max_steps') or '?'}", f"epoch {ev.get('epoch', 0):.2f}"]
    if ev.get("loss") is not None:
        parts.append(f"loss {ev['loss']:.4f}")
    if ev.get("lr") is not None:
        parts.append(f"lr {format_lr(ev['lr'])}")
    if ev.get("tokens_per_s"):
        parts.append(f"{ev['tokens_per_s']:,.0f} tok/s")
    if ev.get("eta_s") is not None:
        parts.append(f"ETA {format_duration(ev['eta_s'])}")
    return " | ".join(parts)


class EventsCallback(TrainerCallback):
    """Turns the Trainer's progress into events (step, eval, checkpoint) and applies stop / checkpoint-now requests.

    Only cheap work here (a dict, a JSON line): heavy Python in the training process slows every step (GIL).
    max_steps comes from the Trainer's state, never recomputed.
    """

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self.t0 = time.monotonic()
        self.last_t = self.t0
        self.last_tokens = 0
        self.last_step_t: float | None = None
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = self.last_t = time.monotonic()
        self.start_step = state.global_step
        self.last_tokens = 0
        self.mark = None  # (time, tokens, step) of this process's first logged step
        from loratui.train.distributed import Agreement

        self.agree = Agreement(self.engine.world)
        self.engine.stop_request.training = True
        if args.eval_on_start and state.global_step == 0 and self.engine.n_eval:
            self.engine.emit("phase", phase="evaluating the base model")
            what = "the adapter it continues" if self.engine.cfg.method.start_from else "the base model"
            self.engine.echo(f"evaluating {what} on {self.engine.n_eval} examples...")

    def on_step_end(self, args, state, control, **kw):
        req = self.engine.stop_request
        checkpoint, req.checkpoint = req.checkpoint, False  # taken (a signal may set it again at any time)
        stop = req.stop
        if self.engine.world is not None and self.engine.world.distributed:  # every rank stops / saves at the same step
            stop, checkpoint = self.agree(stop, checkpoint)  # what all ranks asked for by the previous step end
            req.stop = req.stop or stop
        if checkpoint:
            control.should_save = True
        if stop:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        self.agree.wait()  # the last reduction in flight: every rank started it

    def _watch_finite(self, state, control, logs: dict) -> None:
        """Divergence: the logged loss or gradient norm (host floats already: no extra sync) is not finite for
        train.max_bad_steps logged steps in a row: training stops and the engine fails the run naming the step."""
        values = [v for v in (logs.get("loss"), logs.get("grad_norm")) if isinstance(v, (int, float))]
        if not values or all(math.isfinite(v) for v in values):
            self.bad_logs, self.first_bad = 0, None
            return
        self.bad_logs = getattr(self, "bad_logs", 0) + 1
        self.first_bad = getattr(self, "first_bad", None) or state.global_step
        limit = self.engine.cfg.train.max_bad_steps
        if self.bad_logs >= limit:
            self.engine.diverged = {"step": state.global_step, "first_bad_step": self.first_bad,
                                    "loss": logs.get("loss"), "grad_norm": logs.get("grad_norm")}
            control.should_training_stop = True
            control.should_save = False
        else:  # the trainer skipped the update (trainers.skip_bad_update): say so, the run goes on
            self.alert(state.global_step, "skipped",
                       f"step {state.global_step}: the loss or gradients are not finite, the update was skipped "
                       f"({self.bad_logs} of {limit} bad logged steps in a row stop the run)")

    def _watch_chosen(self, step: int, logs: dict) -> None:
        """DPO and KTO can push the chosen answers down with the rejected ones ("likelihood displacement"): the
        margin grows while generations drift. Said once, when the chosen answers' log-likelihood has fallen
        ``CHOSEN_DROP_NATS`` below the reference's (on the demo: lr 5e-4 fell 45 nats and ended at 0/80 exact
        answers; 5e-5 rose and kept 73/80: bench/RESULTS.md, round 7)."""
        chosen, method = logs.get("rewards/chosen"), self.engine.cfg.method
        if chosen is None or method.objective not in ("dpo", "kto") or getattr(self, "warned_chosen", False):
            return
        nats = chosen / method.beta
        if nats <= -CHOSEN_DROP_NATS:
            self.warned_chosen = True
            self.alert(step, "chosen_falling",
                       f"step {step}: the chosen answers are {-nats:.0f} nats less likely than under the reference "
                       f"(reward {chosen:+.2f}): {method.objective} is pushing both answers down and generations "
                       "drift; lower train.lr (about 10x), or use objective orpo, which also trains on the chosen")

    def alert(self, step: int, kind: str, message: str) -> None:
        self.engine.emit("alert", step=step, alert=kind, message=message)
        self.engine.echo(f"alert: {message}")

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        self._watch_finite(state, control, logs)
        self._watch_chosen(state.global_step, logs)
        spike = self.engine.spikes.observe(state.global_step, logs.get("loss")) if "loss" in logs else None
        if spike:
            self.alert(state.global_step, "spike", spike)
        now = time.monotonic()
        if "loss" in logs or "train_loss" not in logs and "eval_loss" not in logs and "learning_rate" in logs:
            tokens = self.engine.trainer.tokens_seen() if self.engine.trainer is not None else 0
            tps = eta = None
            if self.mark is not None:  # rates from the second line on: the first step pays for warm-up
                t_mark, n_mark, step_mark = self.mark
                dt = now - self.last_t
                tps = (tokens - self.last_tokens) / dt if dt > 0 and tokens > self.last_tokens else None
                if state.global_step > step_mark:
                    eta = (now - t_mark) / (state.global_step - step_mark) * (state.max_steps - state.global_step)
                    eta += self.final_eval_s()  # the evaluation on every held-out row after the last step
            else:
                self.mark = (now, tokens, state.global_step)
            self.last_t, self.last_tokens = now, tokens
            elapsed = now - self.t0
            ev = self.engine.emit(
                "step", step=state.global_step, max_steps=state.max_steps, epoch=round(state.epoch or 0, 4),
                loss=logs.get("loss"), lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                tokens_per_s=round(tps, 1) if tps else None, tokens_seen=tokens, elapsed=round(elapsed, 2),
                eta_s=round(eta, 1) if eta is not None else None, **reward_fields(logs))
            self.engine.progress(ev)
            self.engine.emit_memory(state.global_step)

    eval_s_per_row: float | None = None  # the last evaluation's time a held-out row

    def final_eval_s(self) -> float:
        """The final evaluation's expected seconds where it runs on the whole held-out set after a curve on a slice
        (data.eval_samples), from the last evaluation's time a row; 0 where the curve's last point is the end."""
        full = self.engine.full_eval
        if full is None or not self.eval_s_per_row:
            return 0.0
        return self.eval_s_per_row * len(full)

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        metrics = metrics or {}
        data = {k[len("eval_"):] if k.startswith("eval_") and k != "eval_loss" else k: v
                for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        loss = metrics.get("eval_loss")
        if loss is not None and self.engine.cfg.model.task == "causal-lm" and self.engine.cfg.method.objective == "sft":
            data["perplexity"] = round(math.exp(min(loss, 50)), 4)
        final = self.engine.eval_final
        data["examples"] = len(self.engine.full_eval) if final and self.engine.full_eval is not None \
            else self.engine.n_eval
        if final:
            data["final"] = True
        runtime = metrics.get("eval_runtime")
        if not final and isinstance(runtime, (int, float)) and runtime > 0 and data["examples"]:
            self.eval_s_per_row = runtime / data["examples"]
        if state.global_step > 0 and isinstance(runtime, (int, float)) and runtime > 0:
            # tokens/s (the log line's and the run's) count training time: the clock skips the evaluation (the
            # ETA's mark does not: the evaluations still to come take time too)
            self.t0 += runtime
            self.last_t += runtime
        self.engine.last_eval_step = state.global_step
        self.engine.last_eval = data  # the finished event carries the last evaluation's metrics
        ev = self.engine.emit("eval", step=state.global_step, epoch=round(state.epoch or 0, 4), **data)
        self.engine.progress(ev)
        es = self.engine.early
        if es is not None and not final and state.global_step > 0:  # the base model is a reference, never "best"
            verdict = es.observe(state.global_step, data)
            if verdict == "improved":
                self.engine.keep_best(state.global_step)
            elif verdict == "plateau":
                self.alert(state.global_step, "plateau", es.message())
            elif verdict == "stop":
                self.engine.early_stopped = state.global_step
                self.alert(state.global_step, "early_stop", f"early stopping at step {state.global_step}: "
                           f"{es.message()}")
                control.should_training_stop = True
        if state.global_step == 0:
            self.engine.emit("phase", phase="training")
            # tokens/s and the ETA count training time only
            self.t0 = self.last_t = time.monotonic()
            self.mark = None

    def on_save(self, args, state, control, **kw):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.engine.emit("checkpoint", step=state.global_step, path=str(path))
        self.engine.echo(f"{path.name} saved")  # engine.log and the Monitor's log say so, not only a toast
