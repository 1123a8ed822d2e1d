"""The app's navigation between screens (the ``open_*`` methods other screens call) and the stand-in for a screen
that cannot be shown. A mixin of :class:`loratui.ui.app.LoratuiApp`, which holds the modes and their screens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from loratui.core.config import RunConfig


class Unavailable(Screen):
    """Stands in for a screen whose module is missing or failed to import."""

    def __init__(self, title: str, reason: str) -> None:
        super().__init__()
        self.title_text, self.reason = title, reason

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"{self.title_text} is not available: {self.reason}", classes="unavailable")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.title_text



class Navigation:
    """Switching modes and re-pointing the screen a mode already has (``self`` is the app)."""

    def open_monitor(self, run_dir: str | Path) -> None:
        """Switch to the monitor, attached to ``run_dir``."""
        run_dir = Path(run_dir)
        self.runs_dir = run_dir.parent
        screen = self._existing("monitor", run_dir=run_dir)
        self.switch_mode("monitor")
        if screen is not None:
            screen.attach(run_dir)

    def open_adapters(self, select: str | Path | None = None) -> None:
        """Switch to the adapter browser, the cursor on ``select`` once it is listed."""
        path = Path(select) if select else None
        screen = self._existing("adapters", select=path)
        self.switch_mode("adapters")
        if screen is not None and path is not None:
            screen.select(path)

    def open_merge(self, adapter: str | Path | None) -> None:
        """Switch to the merge wizard for ``adapter``."""
        path = Path(adapter) if adapter else None
        screen = self._existing("merge", adapter=path)
        self.switch_mode("merge")
        if screen is not None:
            screen.set_adapter(path)

    def open_playground(self, model: str | Path | None = None, gguf: str | Path | None = None) -> None:
        """Switch to the playground, loading ``model`` (an adapter or model folder) when given; ``gguf`` beside it."""
        screen = self._existing("playground", model=model, gguf=gguf)
        self.switch_mode("playground")
        if screen is not None and model is not None:
            screen.load(model, gguf=gguf)

    def open_compare(self, runs: list[str | Path] | None = None, study: str | None = None) -> None:
        """Switch to Compare with ``runs`` side by side, or the runs of ``study``."""
        paths = [Path(p) for p in runs] if runs else None
        screen = self._existing("compare", runs=paths, study=study)
        self.switch_mode("compare")
        if screen is not None:
            if study is not None:
                screen.set_study(study)
            elif paths:
                screen.set_runs(paths)

    def open_queue(self) -> None:
        self.switch_mode("queue")

    def open_setup_with(self, cfg: RunConfig, source: str | Path | None = None) -> None:
        """Switch to setup with the form filled from ``cfg`` (e.g. 'new run like this one')."""
        self.switch_mode("setup")
        self.setup_screen.replace_form(cfg, source=source)

    def _existing(self, mode: str, **kwargs: Any) -> Any:
        """The screen ``make_screen`` made for ``mode`` when it exists (re-point it); else None, and it is made
        with ``kwargs`` when the mode is first shown."""
        screen = self.mode_screens.get(mode)
        if screen is not None and not isinstance(screen, Unavailable):
            return screen
        self._pending[mode] = kwargs
        return None
