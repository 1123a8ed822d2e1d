"""Run setup: the config form, validated as you type, with a live estimate beside it; presets; preview; launch.

Loading and saving configs and the target picker live in the layers under this screen
(``loratui.ui.screens.setup_actions``), the preview and launch under those (``setup_launch``), the estimate panel's
worker in ``loratui.ui.screens.setup_estimate``; what the form shows for a config in ``loratui.ui.widgets.setup_values``.
Heavy work (parameter counting, memory estimate, layer listing, data preview, preflight, launch) runs in thread
workers started on this screen; ``LoratuiScreen`` turns their errors into the error modal.
Results come back as messages (``loratui.ui.messages``) posted to this screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches, QueryType
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Checkbox, Footer, Header, Input, Select, Static

from loratui.core.config import RunConfig, format_validation_error
from loratui.core.config_draft import ConfigDraft
from loratui.core.presets import preset_modules
from loratui.ui.screens.setup_estimate import SetupEstimate
from loratui.ui.widgets.form import (
    SECTION_TITLES, SPECS, SPECS_BY_PATH, FieldSpec, FormField, SectionTitle, extra_check, parse_value, validate_field,
)
from loratui.ui.widgets.setup_panel import EstimatePanel, device_plan, short_gpus_problem
from loratui.ui.widgets.setup_values import (
    FIRST_SECTIONS, config_values, draft_marks, model_key, section_title, shown_fields, unused_notes,
)

HELP_TEXT = (
    "Every field is checked as you type; a red line under a field says what is wrong, and launch waits until "
    "nothing is. The panel on the right recomputes half a second after you stop typing: trainable parameters, "
    "the memory this config needs next to full fine-tuning and QLoRA, and whether it fits the GPU's free memory. "
    "On a box with several cards it lists them: the ones GPUs (train.gpus: auto, a count, or indices like 0,2) "
    "chooses are marked, each with whether the per-card need fits it, and the effective batch a step. "
    "Preview shows the first training examples as the model sees them, with the tokens that carry the loss "
    "highlighted. Launch checks the config (preflight), creates the run folder, starts the engine as its own "
    "process and opens the monitor."
)


class SetupScreen(SetupEstimate):
    """The run setup form and its live estimate panel."""

    HELP_TITLE = "Setup"
    HELP_TEXT = HELP_TEXT
    AUTO_FOCUS = ""  # start with no field focused: the footer then shows the single-letter keys

    BINDINGS = [
        Binding("ctrl+l,f5", "launch", "Launch", tooltip="Check the config, start the run, open the monitor"),
        Binding("p,f8", "preview", "Preview", tooltip="The first examples as the model sees them"),
        # priority: the dialog is up before the keys typed after these are routed (they land in it, not the form)
        Binding("ctrl+o", "open_config", "Open", tooltip="Load a sample config or a YAML file", priority=True),
        Binding("ctrl+s", "save_config", "Save", show=False, tooltip="Save the form as YAML", priority=True),
        Binding("ctrl+t", "pick_targets", "Targets", show=False, tooltip="Pick target modules from the model"),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]

    def __init__(self, config: RunConfig | None = None, source: str | Path | None = None,
                 draft: ConfigDraft | None = None) -> None:
        super().__init__()
        self.values: dict[str, dict[str, Any]] = config_values(config or RunConfig())
        #: a config file's mistakes in the form (``draft_marks``): the file's texts of its bad values (a field
        #: shows it as it mounts; it is no edit while the field still holds it), and the choices' notes
        self.draft_text, self.draft_notes = draft_marks(draft)
        self.errors: dict[str, str] = {}
        self.cross_error: str | None = None
        self.source = str(source) if source else None
        self.layers_cache: dict[str, list[str] | None] = {}
        self._timer: Timer | None = None
        self._seq = 0
        self._estimated_key: str | None = None
        self._launching = False
        #: the DPO loss chosen before the objective left dpo (restored when it comes back)
        self._dpo_loss_kept: str | None = None
        #: the field showing the cross-section error under it (the field that error names)
        self._cross_marked: str | None = None
        self._pending_sections: list[str] = []
        #: the cards the last estimate saw (None until it ran): train.gpus is checked against them
        self.gpus_seen: list[Any] | None = None
        #: every section of the form is mounted (the first frame shows only the first ones)
        self.form_ready = False

    # -- layout -----------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="setup-body"):
            # not focusable: focus goes from field to field (focus entering or leaving the whole form restyled
            # every field, a quarter of a second a key on 2 cores); a focused field scrolls itself into view
            with VerticalScroll(id="setup-form", can_focus=False):
                yield Static("", id="form-status")
                yield from self._section_widgets(FIRST_SECTIONS)
                yield Static("", id="form-end")
            with VerticalScroll(id="setup-side"):
                yield EstimatePanel(id="estimate")
        yield Footer(compact=True, show_command_palette=False)

    def _section_widgets(self, sections: tuple[str, ...]) -> list[Widget]:
        """Title and fields of ``sections``, showing the current values (hidden fields already hidden)."""
        shown = shown_fields(self.values)
        out: list[Widget] = []
        for section in sections:
            out.append(SectionTitle(section_title(section, self.values), id=f"title-{section}",
                                    classes="section-title"))
            for spec in SPECS:
                if spec.section == section:
                    ff = FormField(spec, self.values[spec.section][spec.key], self.draft_text.get(spec.path))
                    ff.display = shown.get(spec.path, True)
                    out.append(ff)
        return out

    def on_mount(self) -> None:
        """The first frame shows the sections that fit the screen; the others are mounted right after it, one
        section a refresh, so the frame does not wait for the whole form (51 fields, about a second on 2 cores)
        and keys typed meanwhile are handled between sections."""
        self._update_title()
        self._check_fields(list(self.query(FormField)))
        self._refresh_status()
        self._pending_sections = [s for s in SECTION_TITLES if s not in FIRST_SECTIONS]
        self.call_after_refresh(self._mount_next_section)

    async def _mount_next_section(self) -> None:
        if not self._pending_sections:
            self.form_ready = True
            self.validate_all()
            if self._baseline is None:
                self.mark_saved()  # the form as it first shows is the loaded config
            return
        section = self._pending_sections.pop(0)
        widgets = self._section_widgets((section,))
        await self.query_one("#setup-form").mount_all(widgets, before="#form-end")
        self._check_fields([w for w in widgets if isinstance(w, FormField)])
        self.call_after_refresh(self._mount_next_section)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """A choice field scrolls to the middle of the form, so its list opens below it and above the footer."""
        if isinstance(event.widget, Select):
            self.query_one("#setup-form").scroll_to_center(event.widget, animate=False, immediate=True)

    def on_resize(self) -> None:
        # the palette key only where the footer has room for it (ctrl+p works everywhere)
        self.query_one(Footer).show_command_palette = self.size.width >= 110

    # -- values and validation --------------------------------------------------------------------------------

    def field(self, path: str) -> FormField:
        return self.query_one(f"#{SPECS_BY_PATH[path].field_id}", FormField)

    def mounted_field(self, path: str) -> FormField | None:
        """The field of ``path``, or None while its section is not mounted yet."""
        try:
            return self.field(path)
        except NoMatches:
            return None

    def known_layers(self) -> list[str] | None:
        return self.layers_cache.get(model_key(self.values))

    def check_field(self, spec: FieldSpec, raw: Any) -> str | None:
        """Validate one control's content, store the value when valid, show the message under the field."""
        value, err = validate_field(spec, self.values[spec.section], parse_value(spec, raw))
        if err is None:
            self.values[spec.section][spec.key] = value
            err = extra_check(spec, value, self.known_layers())
        if err is None and spec.path == "train.gpus":
            err = self.gpus_problem()
        self._set_error(spec, err)
        return err

    def gpus_problem(self) -> str | None:
        """Why train.gpus cannot be met on this box's cards (the one-line ConfigError, without the field name)."""
        if self.gpus_seen is None:
            return None
        try:
            cfg = RunConfig.model_validate(self.values)
        except ValidationError:
            return None  # the form's own messages say what is wrong
        _, problem = device_plan(cfg, self.gpus_seen)
        return short_gpus_problem(problem) if problem else None

    def _set_error(self, spec: FieldSpec, err: str | None) -> None:
        if err:
            self.errors[spec.path] = err
        else:
            self.errors.pop(spec.path, None)
        try:  # a valid value the estimate could not use (an unknown model) still says why
            note = self.draft_notes.get(spec.path)
            self.field(spec.path).set_error(err or note or self.estimate_problem_text(spec.path))
        except Exception:
            pass

    def _check_fields(self, fields: list[FormField]) -> None:
        for ff in fields:
            self.check_field(ff.spec, ff.get_raw())

    def validate_all(self) -> None:
        """Check every field (after loading a config), then the cross-section rules."""
        self._check_fields(list(self.query(FormField)))
        self.apply_visibility()
        if self.form_ready:
            self.after_change()
        else:
            self._refresh_status()

    def visible_errors(self) -> dict[str, str]:
        out = {}
        for path, msg in self.errors.items():
            ff = self.mounted_field(path)
            if ff is None or ff.display:
                out[path] = msg
        return out

    def build_config(self) -> RunConfig | None:
        """The config of the last valid values (None when the sections contradict each other)."""
        try:
            cfg = RunConfig.model_validate(self.values)
        except ValidationError as err:
            self.cross_error = format_validation_error(err)
            return None
        self.cross_error = None
        return cfg

    def current_config(self) -> RunConfig | None:
        """The config to launch: None while any visible field is invalid."""
        cfg = self.build_config()
        return None if (cfg is None or self.visible_errors()) else cfg

    def after_change(self) -> None:
        """Refresh the form status line and the panel note, and schedule an estimate when the config holds."""
        cfg = self.build_config()
        self._refresh_status()
        self._update_title()
        self.drop_blocked()
        self._mark_unused()
        if cfg is not None:
            self.schedule_estimate()

    def _refresh_status(self) -> None:
        errors = self.visible_errors()
        status = self.query_one("#form-status", Static)
        if self.cross_error:
            status.update(self.cross_error)
        elif errors:
            status.update(f"{len(errors)} field{'s' if len(errors) != 1 else ''} to fix before launch")
        status.display = bool(self.cross_error or errors)
        self._mark_cross_field()
        problem = None
        if self.cross_error:
            problem = "the form contradicts itself (see the top of the form)"
        elif errors:
            problem = f"{len(errors)} invalid field{'s' if len(errors) != 1 else ''}: shown for the last valid values"
        self.query_one(EstimatePanel).set_problem(problem)

    def _mark_cross_field(self) -> None:
        """The cross-section error also shows under the field it names ('data.format: must be preference ...'),
        where the user is looking, unless that field has its own error or is hidden."""
        path, _, message = (self.cross_error or "").partition(": ")
        ff = self.mounted_field(path) if path in SPECS_BY_PATH else None
        target = path if ff is not None and ff.display and path not in self.errors else None
        if self._cross_marked and self._cross_marked != target and self._cross_marked not in self.errors:
            old = self.mounted_field(self._cross_marked)
            if old is not None:
                old.set_error(self.estimate_problem_text(self._cross_marked))
        self._cross_marked = target
        if ff is not None and target:
            ff.set_error(message)

    # -- control events ---------------------------------------------------------------------------------------

    def _spec_of(self, widget: Any) -> FieldSpec | None:
        wid = widget.id or ""
        if not wid.startswith("f-"):
            return None
        section, _, key = wid[2:].partition("-")
        return SPECS_BY_PATH.get(f"{section}.{key}")

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _control_changed(self, event: Input.Changed | Select.Changed | Checkbox.Changed) -> None:
        control = getattr(event, "input", None) or getattr(event, "select", None) or getattr(event, "checkbox", None)
        spec = self._spec_of(control)
        if spec is None:
            return
        if parse_value(spec, event.value) != self.values[spec.section][spec.key]:
            self.draft_notes.pop(spec.path, None)  # the user's own choice now (a control mounting says its value)
        if spec.path == "method.objective":
            self.keep_dpo_loss(parse_value(spec, event.value))
            lr = self.values["train"].get("lr")
            if parse_value(spec, event.value) in ("dpo", "kto") and isinstance(lr, float) and lr >= 1e-4:
                self.notify(f"train.lr is {lr:g}: DPO and KTO usually train far lower than SFT (the DPO demo: 5e-5; "
                            "at 5e-4 it pushed the chosen answers down too)", severity="warning", timeout=8)
        err = self.check_field(spec, event.value)
        path = spec.path
        if path == "lora.preset" and not err and self.values["lora"]["preset"]:
            name = self.values["lora"]["preset"]
            mods = preset_modules(name)
            targets = self.mounted_field("lora.target_modules")
            if self.values["lora"]["target_modules"] != mods:
                self.values["lora"]["target_modules"] = mods
                if targets is not None:
                    targets.set_value(mods)  # its Changed message re-validates the targets
        elif path == "lora.target_modules" and not err:
            preset = self.values["lora"]["preset"]
            if preset and self.values["lora"]["target_modules"] != preset_modules(preset):
                self.values["lora"]["preset"] = None
                self.field("lora.preset").set_value(None)
        if path in ("model.name", "model.task", "model.trust_remote_code"):
            self.recheck_targets()
        if path in ("method.kind", "method.objective", "method.start_from", "data.format", "model.task"):
            self.apply_visibility()
        self.after_change()

    def keep_dpo_loss(self, objective: Any) -> None:
        """The DPO loss is DPO's alone: leaving dpo puts it back to sigmoid (the other objectives refuse any other),
        and coming back to dpo brings the one chosen before, so changing the objective loses nothing."""
        method = self.values["method"]
        if objective == "dpo":
            loss, self._dpo_loss_kept = self._dpo_loss_kept or method["loss_type"], None
        else:
            if method["loss_type"] != "sigmoid":
                self._dpo_loss_kept = method["loss_type"]
            loss = "sigmoid"
        if loss != method["loss_type"]:
            method["loss_type"] = loss
            ff = self.mounted_field("method.loss_type")
            if ff is not None:
                ff.set_value(loss)

    def recheck_targets(self) -> None:
        spec = SPECS_BY_PATH["lora.target_modules"]
        ff = self.mounted_field(spec.path)
        if ff is not None:  # else it is checked when its section is mounted
            self.check_field(spec, ff.get_raw())

    def _mark_unused(self) -> None:
        for path, note in unused_notes(self.values).items():
            ff = self.mounted_field(path)
            if ff is not None:
                ff.set_note(note)

    def apply_visibility(self) -> None:
        for path, visible in shown_fields(self.values).items():
            ff = self.mounted_field(path)
            if ff is not None:
                ff.display = visible
        for title in self.query(SectionTitle):
            title.update(section_title(title.id.removeprefix("title-"), self.values))

    # -- misc --------------------------------------------------------------------------------------------------

    def action_leave_field(self) -> None:
        self.set_focus(None)

    def focus_next(self, selector: str | type[QueryType] = "*") -> Widget | None:
        """Tab in form order (the app's tab binding calls this); see ``_step_focus``."""
        return self._step_focus(1) if selector == "*" else super().focus_next(selector)

    def focus_previous(self, selector: str | type[QueryType] = "*") -> Widget | None:
        return self._step_focus(-1) if selector == "*" else super().focus_previous(selector)

    def _step_focus(self, step: int) -> Widget | None:
        """Focus the next / previous field in form order. Textual orders focus by screen position, and the
        sections mounted after the first frame have no position until their first layout: a Tab typed then
        jumped into them."""
        def shown(widget: Widget) -> bool:
            return all(node.display for node in widget.ancestors_with_self if node is not self)

        chain = [w for w in self.query("#setup-form *") if w.focusable and shown(w)]
        chain += [w for w in self.query("#setup-side") if w.focusable]
        if not chain:
            return self.focused
        focused = self.focused
        if focused in chain:
            target = chain[(chain.index(focused) + step) % len(chain)]
        else:
            target = chain[0] if step > 0 else chain[-1]
        self.set_focus(target)
        return target

    def typing(self) -> bool:
        """A form field has the focus (escape leaves it, and the letter keys work again)."""
        focused = self.focused
        return focused is not None and any(isinstance(node, FormField) for node in focused.ancestors_with_self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "launch" and self._launching:
            return None  # shown, greyed out
        return True
