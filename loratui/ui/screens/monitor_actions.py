"""The Monitor's keys: stop (x), checkpoint now (c), open the adapter (o), retry a run that ran out of GPU memory
with half the micro-batch (b), detach (d, escape); and which of them the run's state allows (the footer shows only
those)."""

from __future__ import annotations

from pathlib import Path

from loratui.core.protocol import ACTIVE_STATES, RunState
from loratui.core.runs import RunDir, RunSummary, request_checkpoint, stop_run
from loratui.ui.widgets.modals import ConfirmModal
from loratui.ui.widgets.run_rows import why_not_stop


class MonitorActions:
    """Mixed into :class:`loratui.ui.screens.monitor.MonitorScreen`: its run_dir, state, view and rendering."""

    # -- actions -------------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":  # an engine works on it (x again while it stops says so)
            return self.state in ACTIVE_STATES
        if action == "checkpoint":
            return self.state in ("running", "starting", "stalled")
        if action == "open_adapter":
            return self._adapter_path() is not None and self.state in ("finished", "stopped")
        if action == "retry_smaller":
            return self._oom_failure()
        if action == "why_not":
            return self.run_dir is not None
        if action == "detach":
            return self.run_dir is not None  # nothing attached: nothing to detach from
        return True

    def _oom_failure(self) -> bool:
        if self.state != "failed" or self.run_dir is None:
            return False
        f = self.view.failure or {}
        return f.get("error") == "OutOfMemoryError" or "out of gpu memory" in str(f.get("message") or "").lower()

    def action_retry_smaller(self) -> None:
        """One key after out-of-memory: same effective batch, smaller steps, resumed from the last checkpoint."""
        if not self._oom_failure():
            return
        from loratui.core.errors import LoratuiError
        from loratui.core.retry import retry_after_oom

        run = RunDir(self.run_dir)
        try:
            pid = retry_after_oom(run)
        except LoratuiError as err:
            self.notify(str(err), severity="error")
            return
        t = run.config().train
        self.notify(f"Retrying {run.name} with micro-batch {t.batch_size} x grad_accum {t.grad_accum} (pid {pid}).")

    def try_target(self) -> Path | None:
        """What t (Try) loads in the Playground from here: the run's saved adapter once it has finished or stopped."""
        path = self._adapter_path() if self.state in ("finished", "stopped") else None
        return path if path is not None and path.is_dir() else None

    def _adapter_path(self) -> Path | None:
        if not self.view.adapter or self.run_dir is None:
            return None
        path = Path(self.view.adapter)
        return path if path.is_absolute() else self.run_dir / path

    def action_stop(self) -> None:
        if self.run_dir is not None and self.state == "stopping":
            self.notify(f"{self.run_dir.name} is already stopping: it saves the adapter and a checkpoint first.")
            return
        if self.run_dir is None or self.state not in ("running", "starting", "stalled"):  # Runs' x: the same states
            self.notify("This run is not running.", severity="warning")
            return
        run = RunDir(self.run_dir)

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            if stop_run(run):
                self.notify(f"Stopping {run.name}: the adapter is saved at the end of this step.")
                self.state = RunState.STOPPING  # what the watcher reads next (stop.json), shown now
                self._render_view()
            else:
                self.notify(f"{run.name} is not running any more.", severity="warning")

        self.app.push_screen(ConfirmModal(
            f"Stop {run.name}?",
            "The engine finishes the current step, saves the adapter and a checkpoint, then exits. "
            "You can resume it later from Runs.", yes="Stop run"), confirmed)

    def action_why_not(self, action: str) -> None:
        """x or c on a run they don't apply to (finished, stopped, failed...): why, in one line, as Runs says it."""
        if self.run_dir is None:
            return
        name, state = self.run_dir.name, self.state or "waiting"
        if action == "stop":
            self.notify(why_not_stop(RunSummary(name=name, path=self.run_dir, state=RunState(state))),
                        severity="warning")
        else:
            self.notify(f"{name} is {state}: no engine to save a checkpoint (one is saved every save_steps while it "
                        "trains).", severity="warning")

    def action_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        run = RunDir(self.run_dir)
        if request_checkpoint(run):
            self.notify("Checkpoint requested: saved at the end of the current step.")
        else:
            self.notify(f"{run.name} is not running.", severity="warning")

    def action_open_adapter(self) -> None:
        path = self._adapter_path()
        if path is None or not path.is_dir():
            self.notify("This run has no saved adapter yet.", severity="warning")
            return
        self.app.open_adapters(path)

    def action_detach(self) -> None:
        """Leave the monitor for Runs; the run keeps going (its engine is its own process)."""
        self.workers.cancel_group(self, "run")
        self._watching = self._following = False
        if self.run_dir is not None and self.state in ("running", "starting"):
            self.notify(f"Detached: {self.run_dir.name} keeps running. Reattach from Runs.")
        self.app.switch_mode("runs")
