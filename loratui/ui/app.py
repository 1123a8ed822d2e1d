"""The loratui terminal app: modes for Setup, Monitor, Runs, Adapters and Merge; Help; the error modal.

Nothing here imports torch, transformers, peft or datasets: the first frame must not wait for them. Screens run
heavy work in thread workers started on themselves; ``loratui.ui.screens.base.LoratuiScreen`` turns their failures
into the error modal (actions) or a toast and a retry (pollers). Screens move between each other through the
``open_*`` methods of :mod:`loratui.ui.app_navigation`.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from pathlib import Path
from typing import Any, Iterable

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from loratui.core.config import RunConfig
from loratui.core.errors import LoratuiError
from loratui.ui.app_support import (  # noqa: F401 - re-exported
    ask_before_quitting, initial_config, partial_call, partial_factory, screen_commands, terminal_gone,
)
from loratui.ui.app_navigation import Navigation, Unavailable
from loratui.ui.screens.help import ErrorModal, HelpScreen

log = logging.getLogger("loratui.ui.app")

#: mode -> (module, class, title) of the screens UI-2 owns; imported when first shown
LAZY_SCREENS: dict[str, tuple[str, str, str]] = {
    "monitor": ("loratui.ui.screens.monitor", "MonitorScreen", "Monitor"),
    "runs": ("loratui.ui.screens.runs", "RunsScreen", "Runs"),
    "adapters": ("loratui.ui.screens.adapters", "AdaptersScreen", "Adapters"),
    "merge": ("loratui.ui.screens.merge", "MergeScreen", "Merge"),
    "playground": ("loratui.ui.screens.playground", "PlaygroundScreen", "Playground"),
    "compare": ("loratui.ui.screens.compare", "CompareScreen", "Compare"),
    "queue": ("loratui.ui.screens.queue", "QueueScreen", "Queue"),
}

#: seconds an app that was told to leave (a signal, a terminal gone) has to exit before it is ended outright
LEAVE_GRACE_S = 3.0
#: seconds between looks at the runs folder for notifications
NOTIFY_POLL_S = 3.0

MODE_TITLES = {"setup": "Setup", **{m: t for m, (_, _, t) in LAZY_SCREENS.items()}}


class LoratuiApp(Navigation, App[None]):
    """Keyboard-driven LoRA/QLoRA fine-tuning."""

    TITLE = "loratui"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    HORIZONTAL_BREAKPOINTS = [(0, "-tiny"), (70, "-narrow"), (100, "-medium"), (120, "-wide")]

    #: letters switch screens and quit, except while the user types (a form field, a wizard step: see
    #: ``LoratuiScreen.typing``); the function keys always do, so they are priority bindings: a text box's own
    #: F-keys (TextArea's f6 selects the line, f7 everything, and the next letter replaced the prompt) never see them
    BINDINGS = [
        # help and quit first: the footer shows bindings in this order, and at 80 columns the last are cut off
        Binding("question_mark", "help", "Help", tooltip="Keys and tips"),
        Binding("f1", "help", "Help", show=False, priority=True),
        Binding("q", "quit_key", "Quit", tooltip="Quit (runs keep going)"),
        Binding("s", "go('setup')", "Setup", tooltip="Set up and launch a run"),
        Binding("m", "go('monitor')", "Monitor", tooltip="Watch the current run"),
        Binding("r", "go('runs')", "Runs", tooltip="Every run, running or done"),
        Binding("a", "go('adapters')", "Adapters", tooltip="Browse trained adapters"),
        Binding("g", "go('merge')", "Merge", tooltip="Merge an adapter into its base"),
        Binding("f2", "switch_mode('setup')", "Setup", show=False, priority=True),
        Binding("f3", "switch_mode('monitor')", "Monitor", show=False, priority=True),
        Binding("f4", "switch_mode('runs')", "Runs", show=False, priority=True),
        Binding("f6", "switch_mode('adapters')", "Adapters", show=False, priority=True),
        Binding("f7", "switch_mode('merge')", "Merge", show=False, priority=True),
        Binding("t", "go('playground')", "Try", tooltip="base model vs adapter, side by side (Playground)"),
        Binding("v", "go('compare')", "Compare", tooltip="Runs side by side, with charts"),
        Binding("w", "go('queue')", "Queue", tooltip="Runs waiting their turn (studies)"),
        Binding("f9", "switch_mode('playground')", "Try", show=False, priority=True),  # one Help row with t
        Binding("f10", "switch_mode('compare')", "Compare", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        # priority: focus moves when the Tab is read, before the keys typed after it are sent to a widget (a
        # non-priority Tab runs only once it has bubbled back, and letters already on their way went to the old
        # focus: typing lost under load)
        Binding("tab", "focus_next", show=False, priority=True),
        Binding("shift+tab", "focus_previous", show=False, priority=True),
        Binding("ctrl+c", "help_quit", show=False, system=True),
    ]

    def __init__(self, config: RunConfig | None = None, *, config_source: str | Path | None = None,
                 runs_dir: str | Path | None = None, catch_errors: bool = False, draft: Any = None) -> None:
        super().__init__()
        self.initial_config = config or RunConfig()
        #: the config file's mistakes (a ConfigDraft of ``config``), marked in Setup's fields to be fixed there
        self.initial_draft = draft
        self.config_source = str(config_source) if config_source else None
        #: explicit runs folder from the command line (it wins over the one in loaded configs)
        self.runs_dir_override: Path | None = Path(runs_dir).expanduser() if runs_dir else None
        self.runs_dir: Path = self.runs_dir_override or Path(self.initial_config.output.runs_dir).expanduser()
        #: the first config's own runs folder (what Setup saves, not --runs-dir)
        self.config_runs_dir = str(self.initial_config.output.runs_dir)
        if self.runs_dir_override:
            self.initial_config.output.runs_dir = str(self.runs_dir_override)
        self.catch_errors = catch_errors
        self.startup_errors: list[BaseException | str] = []
        self._internal_errors = 0
        self._started = False  # errors before the setup screen is up end the app as usual
        self._pending: dict[str, dict[str, Any]] = {}
        #: the screen made for each mode (made when first shown)
        self.mode_screens: dict[str, Screen] = {}
        #: folders added in Adapters (searched besides the runs folder)
        self.adapter_folders: list[Path] = []
        self.add_mode("setup", self._make_setup)
        for mode in LAZY_SCREENS:
            self.add_mode(mode, partial_factory(self, mode))

    # -- screens ----------------------------------------------------------------------------------------------

    def _make_setup(self) -> Screen:
        return self.setup_screen

    def make_screen(self, mode: str) -> Screen:
        module_name, class_name, title = LAZY_SCREENS[mode]
        kwargs = self._pending.pop(mode, {})
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except Exception as err:  # a screen whose module fails to import must not take the app down
            log.warning("cannot import %s.%s: %s", module_name, class_name, err)
            screen: Screen = Unavailable(title, f"{type(err).__name__}: {err}")
        else:
            screen = cls(**kwargs)
        self.mode_screens[mode] = screen
        return screen

    @property
    def setup_screen(self) -> Any:
        """The setup screen (created when first needed)."""
        screen = self.mode_screens.get("setup")
        if screen is None:
            from loratui.ui.screens.setup import SetupScreen

            screen = self.mode_screens["setup"] = SetupScreen(self.initial_config, source=self.config_source,
                                                                  draft=self.initial_draft)
        return screen

    async def on_mount(self) -> None:
        self._install_shutdown()
        self._watch_runs()
        await self.switch_mode("setup")
        self._started = True
        for err in self.startup_errors:
            self.show_error(err)
        if self.initial_draft is not None:
            from loratui.ui.widgets.setup_values import draft_summary

            self.notify(draft_summary(self.initial_draft), severity="warning", timeout=20)
        self._find_live_runs()

    @work(thread=True, exclusive=True, exit_on_error=False, group="live", description="Looking for live runs")
    def _find_live_runs(self) -> None:
        """Re-attaching from another session: the Monitor watches the newest run whose engine is alive, and a
        notification says so (the app still opens on Setup)."""
        from loratui.core.runs import live_runs

        found = live_runs(self.runs_dir)
        if found:
            self.call_from_thread(self._attach_live, found)

    def _attach_live(self, found: list) -> None:
        monitor = self.mode_screens.get("monitor")
        if getattr(monitor, "run_dir", None) is not None or "monitor" in self._pending:
            return  # the user already chose a run to watch
        newest = found[0]
        self._existing("monitor", run_dir=newest.path)
        if monitor is not None and hasattr(monitor, "attach"):
            monitor.attach(newest.path)
        more = f" ({len(found) - 1} more: r lists them)" if len(found) > 1 else ""
        where = f" at step {newest.step}/{newest.max_steps}" if newest.max_steps else ""
        self.notify(f"{newest.name} is training{where}: m watches it{more}", title="run in progress", timeout=8)

    # -- leaving cleanly: SIGTERM, SIGHUP, a terminal that went away ------------------------------------------------
    def _install_shutdown(self) -> None:
        """SIGTERM and SIGHUP exit the app like ctrl+q (so the helper process goes with it); a terminal that hung
        up while SIGHUP is ignored (nohup) is noticed within a second instead of spinning on a dead tty. Engines run
        in their own sessions and are not touched."""
        if self.is_headless:
            return
        import asyncio
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # started under nohup: the user asked to survive a hangup
            try:
                loop.add_signal_handler(sig, self._exit_on_signal, sig.name)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        self.set_interval(1.0, self._check_terminal, name="terminal-watch")

    @work(thread=True, exclusive=True, exit_on_error=False, group="notify", description="Watching runs")
    def _watch_runs(self) -> None:
        """Bell and desktop notification when a run finishes, fails, stalls or alerts (loratui.ui.notify)."""
        import time

        from textual.worker import get_current_worker

        from loratui.ui import notify

        if self.is_headless or not notify.enabled():
            return
        watch, worker = notify.RunWatch(self.runs_dir), get_current_worker()
        while not worker.is_cancelled:
            news = watch.poll()
            if news:
                self.call_from_thread(self._tell, news)
            end = time.monotonic() + NOTIFY_POLL_S
            while not worker.is_cancelled and time.monotonic() < end:
                time.sleep(0.1)

    def _tell(self, news: list[tuple[str, str]]) -> None:
        from loratui.ui import notify

        driver = self._driver
        if driver is not None:
            notify.tell(driver.write, self.bell, news)
        for name, what in news:
            self.notify(what, title=name, severity="error" if "failed" in what or "stalled" in what else
                        "warning" if what.startswith("alert") else "information")

    def _exit_on_signal(self, name: str) -> None:
        log.info("%s: leaving", name)
        self._leave()

    def _check_terminal(self) -> None:
        if terminal_gone():
            log.info("the terminal hung up: leaving")
            self._leave()

    def _leave(self) -> None:
        from loratui.ui import offload

        offload.shutdown()  # first: a worker waiting on the helper would otherwise hold the exit until it answers
        self.exit(return_code=0)
        # an app hung up while it was still starting (a dropped SSH connection in its first second) never got to
        # process that exit and slept on forever with no terminal: whatever state it is in, it ends now
        import os
        import threading

        def last_resort() -> None:
            import time

            time.sleep(LEAVE_GRACE_S)
            os._exit(0)

        threading.Thread(target=last_resort, name="leave", daemon=True).start()

    def on_unmount(self) -> None:
        if not self.is_headless:  # ctrl+q too: the helper goes before asyncio waits for the worker threads
            from loratui.ui import offload

            offload.shutdown()

    def action_switch_mode(self, mode: str) -> None:  # type: ignore[override]
        if isinstance(self.screen, ModalScreen):
            return
        self.switch_mode(mode)

    def action_go(self, mode: str) -> None:
        """A screen letter (s, m, r, a, g): like the function keys, unless the user is typing. t and g from a screen
        that shows a trained adapter (the Monitor of a finished run, the Playground) open the Playground or Merge on
        it."""
        if self.user_is_typing():
            return
        target = getattr(self.screen, "try_target", lambda: None)() if mode in ("playground", "merge") else None
        shown = self.mode_screens.get(mode)
        if target is not None and mode == "playground" and str(target) != getattr(shown, "model_ref", None):
            self.open_playground(target)
        elif target is not None and mode == "merge" and Path(target) != getattr(shown, "adapter", None):
            self.open_merge(target)  # g from the Playground or a finished run's Monitor: merge that adapter
        elif mode == "monitor" and getattr(shown, "state", "") not in ("running", "starting", "stopping", "stalled"):
            self._monitor_live_or_shown(getattr(shown, "run_dir", None), self.screen)
        else:
            self.action_switch_mode(mode)

    @work(thread=True, exclusive=True, exit_on_error=False, group="m", description="Looking for a live run")
    def _monitor_live_or_shown(self, watched: Path | None, pressed_on: Any) -> None:
        """m with the Monitor on an ended run (or none): the newest run training now if there is one (started since
        from the CLI or the queue), else the Monitor as it is. The runs folder is read here, off the UI thread; a
        screen changed meanwhile (another key) wins."""
        from loratui.core.runs import live_runs

        found = live_runs(self.runs_dir)
        live = Path(found[0].path) if found and Path(found[0].path) != watched else None
        self.call_from_thread(self._monitor_after_look, live, pressed_on)

    def _monitor_after_look(self, live: Path | None, pressed_on: Any) -> None:
        if self.screen is pressed_on:
            self.open_monitor(live) if live is not None else self.action_switch_mode("monitor")

    async def action_quit(self) -> None:
        """ctrl+q and q: leave (runs keep going), after asking when Setup holds unsaved edits."""
        if not ask_before_quitting(self):
            self.exit()

    async def action_quit_key(self) -> None:
        if not self.user_is_typing():
            await self.action_quit()

    def user_is_typing(self) -> bool:
        """Whether the screen on top has the user's focus in a text-entry place (a form field, a wizard step)."""
        typing = getattr(self.screen, "typing", None)  # every loratui screen has it; modals and Textual's don't
        return bool(typing and typing())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("switch_mode", "go") and parameters and parameters[0] == self.current_mode:
            return False  # the key for the screen you are on is hidden
        if action in ("go", "quit_key") and self.user_is_typing():
            return False  # letters belong to what the user is typing
        if action == "help" and isinstance(self.screen, (HelpScreen, ErrorModal)):
            return False  # F1 (a priority key) reaches Help's own binding: it closes
        return True

    def action_help(self) -> None:
        if isinstance(self.screen, (HelpScreen, ErrorModal)):
            return
        self.push_screen(HelpScreen(self.screen))

    # -- errors -----------------------------------------------------------------------------------------------

    def show_error(self, error: BaseException | str, title: str = "Error") -> None:
        """The error modal (one line and a hint); safe to call from the UI thread only."""
        if not isinstance(error, (LoratuiError, str)):
            log.error("%s", "".join(traceback.format_exception(error)))
        self.push_screen(ErrorModal(error, title=title))

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        """Workers started on the app itself (each screen handles its own: see ``LoratuiScreen``)."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if error is None:
            return
        what = event.worker.description or event.worker.name or "background work"
        self.show_error(error, title=f"{what[:1].upper()}{what[1:]} failed")

    def _handle_exception(self, error: Exception) -> None:
        """With ``catch_errors`` (the real app), a bug in a handler shows the error modal instead of exiting."""
        self._internal_errors += 1
        if (self.catch_errors and self._started and self._internal_errors <= 3
                and not isinstance(error, (KeyboardInterrupt, SystemExit))
                and not isinstance(self.screen, ErrorModal)):
            try:
                self.show_error(error, title="Internal error")
                return
            except Exception:
                pass
        super()._handle_exception(error)

    # -- command palette --------------------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own commands, the screens, Help, and the actions of the screen on top that can run now."""
        yield from super().get_system_commands(screen)
        for mode, title in MODE_TITLES.items():
            if mode != self.current_mode:
                yield SystemCommand(f"Go to {title}", f"Switch to the {title} screen",
                                    partial_call(self.action_switch_mode, mode))
        yield SystemCommand("Help", "Keys and tips", self.action_help)
        yield from screen_commands(screen)


def run_app(config_path: str | None = None, runs_dir: str | None = None) -> int:
    """Entry point of ``loratui`` with no sub-command."""
    from loratui.ui import offload
    from loratui.ui.widgets.setup_core import study_note

    if config_path and (study := study_note(config_path)):  # said before the app opens, as a file that is no config
        raise LoratuiError(study, field="config")
    cfg, source, errors = initial_config(config_path)
    draft = None
    if config_path and errors:  # mistakes in values open marked in Setup; a file that is not a config is said
        from loratui.core.config_draft import read_draft  # before the app opens, as the commands do

        draft = read_draft(config_path)
        if draft is None:
            raise errors[0]
        cfg, source, errors = draft.config, str(config_path), []
    app = LoratuiApp(cfg, config_source=source, runs_dir=runs_dir, catch_errors=True, draft=draft)
    app.startup_errors.extend(errors)
    try:
        app.run()
    except OSError:  # writing the last frame to a terminal that is gone
        if not terminal_gone():
            raise
    finally:
        offload.shutdown()  # the helper process goes with the app
    return app.return_code or 0
