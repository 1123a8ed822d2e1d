"""Config form: one row per config field, built from the pydantic models, validated as you type.

Each field is validated with its own section model (the section's current values plus the new one), and the
message of ``format_validation_error`` is shown under the field in red. The screen owns the values; this module
only knows how to show them (the fields as data, their values and their checks are in
``loratui.ui.widgets.form_specs``, re-exported here).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from loratui.core.presets import PRESET_NOTES
from loratui.ui.widgets.form_specs import (  # noqa: F401 - re-exported: the screens import them from here
    BOOL_TEXT, DATA_COLUMNS, GPUS_HELP, KTO_COLUMNS, LAYOUT, PICKERS, PLACEHOLDERS, SECTION_MODELS, SECTION_TITLES,
    SPECS, SPECS_BY_PATH, FieldSpec, Kind, adapter_problem, build_specs, extra_check, format_value, parse_gpus,
    parse_value, short_message, validate_field,
)

# -- widgets ------------------------------------------------------------------------------------------------------


class FormInput(Input):
    """An Input that runs its own editing keys (backspace, delete, arrows, home, end ...) as they come, in order with
    the characters typed. Textual runs a widget's key bindings only once the key has bubbled up to the app, through
    every container's message queue: behind the Setup screen's checks of the previous keystrokes when keys come in a
    burst (a paste-like burst over SSH, or a busy box), while the characters after them were already inserted.
    Backspaces then landed on what was typed after them ('32', two backspaces, '1234567890' gave '3212345678')."""

    async def _on_key(self, event) -> None:
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return
        await super()._on_key(event)


class Toggle(Checkbox):
    """A checkbox whose mark is empty when off (Textual's default shows a dim X either way)."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "X" if self.value else " "

    def get_content_height(self, container, viewport, width: int) -> int:
        # Checkbox is one line always: a hint wider than the form wraps under its box instead of losing its end
        return max(1, len(self.render().wrap(width)))


class SectionTitle(Static):
    """A section heading inside the form."""


#: fields with a note line: the whole targets list when its box is too narrow; what is not in force
NOTE_FIELDS = ("lora.target_modules", "train.epochs", "data.validation_fraction")


class FormField(Vertical):
    """Label + control on one line, a red message line under it while the value is invalid."""

    def __init__(self, spec: FieldSpec, value: Any, text: str | None = None) -> None:
        """``text``: what a text box shows instead of ``value`` (a config file's value that does not validate)."""
        super().__init__(id=spec.field_id, classes=f"form-field kind-{spec.kind}")
        self.spec = spec
        self._initial = format_value(spec, value) if text is None or spec.kind in ("bool", "select") else text
        self.error: str | None = None
        self._control = self._make_control()

    def compose(self) -> ComposeResult:
        spec = self.spec
        with Horizontal(classes="field-row"):
            yield Label(spec.label, classes="field-label")
            yield self._control
            if spec.path in PICKERS:
                button_id, tip = PICKERS[spec.path]
                yield Button("pick", id=button_id, classes="pick", compact=True, tooltip=tip)
        yield Static("", classes="field-error")
        if spec.path in NOTE_FIELDS:
            yield Static("", classes="field-note", markup=False)

    def set_note(self, note: str) -> None:
        """A dim line under the field ('' hides it); a note starting 'not used' dims the field too."""
        if self.is_mounted and self.spec.path in NOTE_FIELDS:
            self.query_one(".field-note", Static).update(note)
            self.query_one(".field-note", Static).display = bool(note)
            self.set_class(note.startswith("not used"), "-unused")

    def on_input_changed(self) -> None:
        self._show_note()

    def on_descendant_focus(self) -> None:
        if self.spec.path in NOTE_FIELDS:  # the note under the box comes into view with it
            self.call_after_refresh(self.scroll_visible, animate=False)

    def on_resize(self) -> None:
        self._show_note()

    def _show_note(self) -> None:
        if self.spec.kind != "targets" or not self.is_mounted:
            return
        value = str(self.get_raw() or "")
        cut = bool(value) and len(value) >= self._control.content_region.width > 0
        names = [n.strip() for n in value.split(",") if n.strip()]
        self.set_note(f"{len(names)} modules: {', '.join(names)}" if cut else "")

    def _make_control(self) -> Widget:
        spec = self.spec
        tip = spec.help or None
        if spec.kind == "bool":
            return Toggle(BOOL_TEXT.get(spec.path, ""), self._initial, id=spec.control_id, compact=True,
                            tooltip=tip)
        if spec.kind == "select":
            if spec.path == "lora.preset":
                options = [(f"{name}", name) for name in spec.choices]
                prompt = "none (type targets)"
            else:
                options = [(c, c) for c in spec.choices]
                prompt = "-"
            return Select(options, value=self._initial, allow_blank=spec.optional, prompt=prompt,
                          id=spec.control_id, compact=True, tooltip=tip)
        return FormInput(self._initial, placeholder=spec.placeholder, id=spec.control_id, compact=True, tooltip=tip,
                         select_on_focus=False)

    @property
    def control(self) -> Widget:
        return self._control

    def get_raw(self) -> Any:
        """What the control holds (Input.value, Select.value, Checkbox.value); its first value until it is mounted."""
        ctl = self._control
        return ctl.value if ctl.is_mounted else self._initial  # type: ignore[attr-defined]

    def set_value(self, value: Any) -> None:
        """Show a config value (the caller decides whether the resulting Changed message should flow)."""
        self.control.value = format_value(self.spec, value)  # type: ignore[attr-defined]

    def set_error(self, message: str | Text | None) -> None:
        self.error = message or None
        self.query_one(".field-error", Static).update(message or "")
        self.set_class(bool(message), "-invalid")


def preset_note(name: str | None) -> str:
    return PRESET_NOTES.get(name or "", "")
