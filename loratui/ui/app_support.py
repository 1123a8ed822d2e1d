"""The app's plumbing apart from the app class: the command palette's screen commands, the first config, and
whether the terminal hung up."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any, Callable, Iterable

from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from loratui.core.config import RunConfig, load_config
from loratui.core.errors import LoratuiError

if TYPE_CHECKING:
    from loratui.ui.app import LoratuiApp


def screen_commands(screen: Screen) -> Iterable[SystemCommand]:
    """One command per described binding of ``screen`` whose action can run now (its ``check_action``)."""
    seen: set[str] = set()
    for cls in type(screen).__mro__:
        if not cls.__module__.startswith("loratui."):
            continue  # Textual's own (focus next, copy text): keys, not things to do
        for binding in Binding.make_bindings(cls.__dict__.get("BINDINGS", [])):
            if not binding.description or binding.action in seen or binding.system:
                continue
            seen.add(binding.action)
            name, _, args = binding.action.partition("(")
            params = tuple(ast.literal_eval(f"({args[:-1]},)")) if args else ()
            if not screen.check_action(name, params):
                continue
            yield SystemCommand(binding.description, binding.tooltip or binding.description,
                                partial_call(screen.run_action, binding.action))


def ask_before_quitting(app: LoratuiApp) -> bool:
    """When Setup holds edits that are in no file, ask before quitting (y or a second ctrl+q quits); True when
    the question is on screen (do not exit yet)."""
    from loratui.ui.widgets.modals import ConfirmModal

    setup = app.mode_screens.get("setup")
    if setup is None or not getattr(setup, "modified", False) or getattr(app.screen, "asks_to_quit", False):
        return False
    modal = ConfirmModal("Quit with unsaved Setup edits?", "The Setup form has edits that are in no file: "
                         "ctrl+s in Setup saves them. Runs keep going either way.", yes="Quit", no="Stay")
    modal.asks_to_quit = True  # type: ignore[attr-defined]
    app.push_screen(modal, lambda yes: app.exit() if yes else None)
    return True


def partial_factory(app: LoratuiApp, mode: str) -> Callable[[], Screen]:
    return lambda: app.make_screen(mode)


def partial_call(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def initial_config(config_path: str | None) -> tuple[RunConfig, str | None, list[BaseException]]:
    """The config the setup screen opens with: the given file, else the SmolLM2 demo, else the defaults."""
    from loratui.ui.widgets.setup_core import demo_config_path

    errors: list[BaseException] = []
    path = config_path or demo_config_path()
    if path:
        try:
            return load_config(path), str(path), errors
        except LoratuiError as err:
            errors.append(err)
    return RunConfig(), None, errors


def terminal_gone(fd: int | None = None) -> bool:
    """Whether the app's terminal hung up (poll reports HUP/ERR/NVAL on it); never reads from it."""
    import select
    import sys

    try:
        fd = sys.__stdin__.fileno() if fd is None else fd
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False
