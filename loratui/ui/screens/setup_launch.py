"""Setup's data preview and launch: the preview renders the first examples in a thread worker; launch checks the
config (preflight), asks first when a run trains from the same runs folder, starts the engine and opens the monitor.

``SetupLaunch`` is the layer under ``SetupActions`` (loratui.ui.screens.setup_actions); ``SetupScreen``
(loratui.ui.screens.setup) owns the form, its values and their validation (``values``, ``current_config``,
``visible_errors``, ``field``...).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from textual import on
from textual.notifications import Notification, Notify

from loratui.core.config import RunConfig
from loratui.core.errors import LoratuiError
from loratui.ui.messages import FieldRejected, LiveRunsFound, PreviewReady, RunLaunched
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.form import SPECS_BY_PATH
from loratui.ui.widgets.modals import ConfirmModal

STARTING = "checking the config and starting the run..."


class SetupLaunch(LoratuiScreen):
    """The preview and launch of the Setup screen."""

    values: dict[str, dict[str, Any]]
    _launching: bool

    # -- preview -----------------------------------------------------------------------------------------------

    def action_preview(self) -> None:
        cfg = self.current_config()
        if cfg is None:
            self._blocked("preview")
            return
        self.notify("loading the tokenizer and rendering examples...", timeout=3)
        self.run_worker(partial(self._preview_thread, cfg), name="preview", group="setup-preview",
                            description="Rendering the data preview", thread=True, exclusive=True,
                            exit_on_error=False)

    def _preview_thread(self, cfg: RunConfig) -> None:
        examples = setup_core.preview(cfg, 3)
        self.post_message(PreviewReady(examples))

    @on(PreviewReady)
    def _preview_ready(self, msg: PreviewReady) -> None:
        if not self.is_current:  # the user went to another screen meanwhile: don't cover it
            self.notify("the data preview is ready in Setup (p shows it)", timeout=4)
            return
        self.app.push_screen(setup_modals().PreviewModal(msg.examples,
                                                         f"Data preview: {self.values['data']['source']}"))

    # -- launch --------------------------------------------------------------------------------------------------

    #: the 'cannot launch: FIELD: ...' toast showing, and what it named (the field's path, or '' for the form)
    _blocked_toast: tuple[str, Notification] | None = None

    def _blocked(self, what: str) -> None:
        self.drop_blocked(force=True)  # the next attempt's toast replaces it
        errors = self.visible_errors()
        if errors:
            path, msg = next(iter(errors.items()))
            ff = self.field(path)
            ff.control.focus()
            self.query_one("#setup-form").scroll_to_widget(ff, animate=False)
            self._toast_blocked(path, f"cannot {what}: {path}: {msg}")
        elif self.cross_error:
            self._toast_blocked("", f"cannot {what}: {self.cross_error}")

    def _toast_blocked(self, path: str, text: str) -> None:
        toast = Notification(text, "", "error", 6)
        self._blocked_toast = (path, toast)
        self.app.post_message(Notify(toast))

    def drop_blocked(self, force: bool = False) -> None:
        """Take the 'cannot launch' toast away once what it named is fixed (it stayed after the fix: QA walk)."""
        if self._blocked_toast is None:
            return
        path, toast = self._blocked_toast
        if not force and (path in self.visible_errors() if path else self.cross_error):
            return
        self._blocked_toast = None
        if toast in self.app._notifications:
            self.app._unnotify(toast)  # Textual's own way out for a toast (what a click on it does)

    def action_launch(self) -> None:
        if self._launching:
            self.notify("already launching", severity="warning")
            return
        cfg = self.current_config()
        if cfg is None:
            self._blocked("launch")
            return
        self._start_launch(cfg, beside=False)

    def _start_launch(self, cfg: RunConfig, *, beside: bool) -> None:
        self._launching = True
        if beside:  # else said once no run is found training (not while the dialog asks: QA walk)
            self.notify(STARTING, timeout=3)
        self.run_worker(partial(self._launch_thread, cfg, beside), name="launch", group="setup-launch",
                        description="Launching the run", thread=True, exit_on_error=False)

    def _launch_thread(self, cfg: RunConfig, beside: bool = False) -> None:
        try:
            if not beside:  # another run training here: the user says whether to share the machine with it
                from loratui.core.runs import live_runs

                live = live_runs(cfg.output.runs_dir)
                if live:
                    self.post_message(LiveRunsFound(cfg, live))
                    return
                self.app.notify(STARTING, timeout=3)  # a message posted: safe from this thread
            run, pid = setup_core.launch(cfg, cfg.output.runs_dir)
        except LoratuiError as err:
            self.post_message(FieldRejected(err.field or "", err.summary or err.message))  # the dialog: all of it
            raise
        except BaseException as err:
            self.post_message(FieldRejected("", str(err)))
            raise
        self.post_message(RunLaunched(Path(run.path), pid))

    @on(FieldRejected)
    def _rejected(self, msg: FieldRejected) -> None:
        self._launching = False
        spec = SPECS_BY_PATH.get(msg.field)
        if spec is not None:
            self._set_error(spec, msg.message)
            self.after_change()

    @on(LiveRunsFound)
    def _live_runs_found(self, msg: LiveRunsFound) -> None:
        self._launching = False
        first = msg.live[0]
        where = f" (step {first.step}/{first.max_steps})" if first.max_steps else ""
        others = f" and {len(msg.live) - 1} more" if len(msg.live) > 1 else ""
        body = (f"{first.name}{where}{others} is training from this runs folder. Launching now runs both at once: "
                "each is slower, and on one GPU together they may run out of memory. To run this one after it, "
                "save the config (ctrl+s) and add it to the Queue (w, then n).")

        def answered(yes: bool | None) -> None:
            if yes:
                self._start_launch(msg.config, beside=True)

        self.app.push_screen(ConfirmModal(f"{first.name} is training", body, yes="Launch beside it",
                                          no="Cancel", danger=False), answered)

    @on(RunLaunched)
    def _launched(self, msg: RunLaunched) -> None:
        self._launching = False
        self.mark_saved(written=True)  # the run's folder holds this config (config.yaml)
        self.notify(f"started {msg.run_path.name}", timeout=4)
        self.app.open_monitor(msg.run_path)


def setup_modals() -> Any:
    """The setup dialogs' module, imported when a dialog first opens (not before the first frame)."""
    from loratui.ui.widgets import setup_modals as module

    return module
