"""What Setup does with its form: load and save configs, pick target modules (the preview and launch are in the layer
under it, ``loratui.ui.screens.setup_launch``).

``SetupActions`` is the layer under ``SetupScreen`` (loratui.ui.screens.setup), which owns the form, its values and
their validation (``values``, ``build_config``, ``current_config``, ``visible_errors``, ``field``...). The heavy work
runs in thread workers and comes back as messages (``loratui.ui.messages``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from textual import on
from textual.widgets import Button, Checkbox, Input, Select

from loratui.core.config import LORA_METHODS, RunConfig, load_config
from loratui.core.config_base import PEFT_TASK_TYPES
from loratui.core.config_draft import ConfigDraft, read_draft
from loratui.core.errors import LoratuiError
from loratui.ui.messages import LayersReady
from loratui.ui.screens.setup_launch import SetupLaunch, setup_modals
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.choice_modal import ChoiceModal
from loratui.ui.widgets.form import SPECS_BY_PATH, FormField, parse_value
from loratui.ui.widgets.modals import ConfirmModal, PromptModal
from loratui.ui.widgets.setup_values import config_values, draft_marks, draft_summary, model_key

#: the data files a config may name before they are on this machine (saved with a warning; launch waits for them)
DATA_FILES = ("data.source", "data.validation_file")
NO_FILE = "no such file or folder"


class SetupActions(SetupLaunch):
    """Loading, saving and the target picker of the Setup screen (the preview and launch: ``SetupLaunch``)."""

    values: dict[str, dict[str, Any]]
    source: str | None
    _launching: bool
    _estimated_key: str | None

    # -- saved or modified --------------------------------------------------------------------------------------

    #: the form's config as last loaded, saved or launched (normalised JSON): what 'modified' compares with
    _baseline: str | None = None
    #: the loaded config's own runs folder (None: the app's first config's), saved instead of --runs-dir
    own_runs_dir: str | None = None

    def _normalised(self) -> str | None:
        try:
            return RunConfig.model_validate(self.values).model_dump_json()
        except ValidationError:
            return None

    def mark_saved(self, *, written: bool = False) -> None:
        """The form as it is now is in a file (or a run's folder): not 'modified'. ``written``: by this form (a
        save, a launch), so the opened file's marks go too (Method kept 'the file's 'lorra' is not allowed here'
        after the fixed config was saved and launched: QA walk)."""
        if written and (self.draft_text or self.draft_notes):
            self.draft_text, self.draft_notes = {}, {}
            self.validate_all()
        self._baseline = self._normalised()
        self._update_title()

    @property
    def modified(self) -> bool:
        """Edits since the form was loaded, saved or launched (a field left invalid counts): the title says
        'modified', and quitting or loading another config asks first."""
        file_text = self.draft_text  # a file's own mistakes, as it was opened, are no edit of the form
        edited = [p for p in self.visible_errors() if not self._in_values(p)
                  and (p not in file_text or self.field(p).get_raw() != file_text[p])]
        return bool(edited) or self._normalised() != self._baseline

    def _in_values(self, path: str) -> bool:
        """The field's content is in the values although marked (a data file not on this machine, a module the
        model lacks): the values' comparison sees its edits (a missing data file read as 'modified': QA walk)."""
        spec = SPECS_BY_PATH[path]
        return parse_value(spec, self.field(path).get_raw()) == self.values[spec.section][spec.key]

    def _update_title(self) -> None:
        title = f"Setup: {Path(self.source).name}" if self.source else "Setup"
        self.sub_title = f"{title} · modified" if self._baseline is not None and self.modified else title

    def replace_form(self, cfg: RunConfig, source: str | Path | None = None, note: str | None = None,
                     draft: ConfigDraft | None = None) -> None:
        """``load_config`` (then the toast ``note``), after asking when the form holds unsaved edits (Open, Runs'
        'new run like this one')."""
        def load() -> None:
            self.load_config(cfg, source, draft)
            if draft is not None:
                self.notify(draft_summary(draft), severity="warning", timeout=20)
            elif note:
                self.notify(note, timeout=3)

        if not self.modified:
            load()
            return
        self.app.push_screen(
            ConfirmModal("Replace the unsaved edits?", "The form has edits that are in no file (ctrl+s saves "
                         "them). Loading this config replaces them.", yes="Replace", no="Keep editing"),
            lambda yes: load() if yes else None)

    # -- loading and saving ----------------------------------------------------------------------------------------

    def load_config(self, cfg: RunConfig, source: str | Path | None = None, draft: ConfigDraft | None = None) -> None:
        """Show ``cfg`` in the form (values are re-validated; the estimate recomputes); a ``draft``'s mistakes show
        in their fields, marked."""
        self.values = config_values(cfg)
        self.draft_text, self.draft_notes = draft_marks(draft)
        self.own_runs_dir = str(self.values["output"]["runs_dir"])
        override = self.app.runs_dir_override
        if override:
            self.values["output"]["runs_dir"] = str(override)
        else:  # Runs and Adapters follow the loaded config's runs folder
            self.app.runs_dir = Path(str(self.values["output"]["runs_dir"])).expanduser()
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            for ff in self.query(FormField):
                ff.set_value(self.values[ff.spec.section][ff.spec.key])
                if ff.spec.path in self.draft_text:
                    ff.control.value = self.draft_text[ff.spec.path]  # type: ignore[attr-defined]
        self.source = str(source) if source else None
        self._estimated_key = None
        self._baseline = self._normalised()
        self.validate_all()
        self._update_title()

    def load_path(self, path: str | Path) -> bool:
        """Open a config file; one with mistakes in its values opens too, each marked in its field to be fixed
        there (a file that is not a config, or whose sections contradict each other, is its one-line error)."""
        path = setup_core.find_config(str(path))
        study = setup_core.study_note(path)
        if study:  # nothing loaded: the form keeps what it holds
            self.notify(study, severity="warning", timeout=10)
            return False
        try:
            cfg = load_config(path)
        except LoratuiError as err:
            draft = read_draft(path)
            if draft is None:
                self.app.show_error(err)
                return False
            self.replace_form(draft.config, source=path, draft=draft)
            return True
        self.replace_form(cfg, source=path, note=f"loaded {path}")
        return True

    def action_open_config(self) -> None:
        def picked(choice: str | None) -> None:  # a sample's path, or the one typed for "Other file..."
            if choice:
                self.load_path(choice)

        self.app.push_screen(setup_modals().ConfigPicker(setup_core.list_sample_configs()), picked)

    def action_save_config(self) -> None:
        cfg = self.build_config()
        errors = self.visible_errors()
        # a data file not on this machine yet does not stop the save (it may arrive later); the launch waits for it
        absent = {p: m for p, m in errors.items() if p in DATA_FILES and m.startswith(NO_FILE) and self._in_values(p)}
        errors = {p: m for p, m in errors.items() if p not in absent}
        if cfg is None or errors:  # say which field: the form may be scrolled away from it
            first = next(iter(errors.items()), None)
            what = f"{first[0]}: {first[1]}" if first else self.cross_error or "the form does not hold a config"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            self.notify(f"fix the form before saving: {what}{more}", severity="error")
            return
        default = self.source if self.source and not _is_sample(self.source) else f"configs/{_default_name(cfg)}.yaml"

        def chosen(path: str | None) -> None:
            if not path:
                return
            target = Path(path).expanduser()
            if target.suffix not in (".yaml", ".yml"):
                target = target.with_suffix(".yaml")
            if target.exists():
                self.app.push_screen(ConfirmModal(f"{target} exists. Overwrite it?", yes="Overwrite", no="Keep"),
                                     lambda ok: ok and self.save_to(cfg, target, absent))
            else:
                self.save_to(cfg, target, absent)

        self.app.push_screen(PromptModal("Save this config as", value=default, placeholder="path/to/config.yaml"),
                             chosen)

    def save_to(self, cfg: RunConfig, path: Path, absent: dict[str, str] | None = None) -> None:
        """Write ``cfg``; ``absent``: the data files not on this machine (path -> message), said with the save."""
        override = self.app.runs_dir_override
        if override and cfg.output.runs_dir == str(override):  # --runs-dir is this session's, not the config's
            cfg = cfg.model_copy(deep=True)
            cfg.output.runs_dir = self.own_runs_dir or self.app.config_runs_dir
        try:
            cfg.save(path)
        except OSError as err:
            self.app.show_error(LoratuiError(f"cannot write {path}: {err.strerror or err}", field="save",
                                             hint="choose a folder you can write to"))
            return
        self.source = str(path)
        self.mark_saved(written=True)
        if absent:
            said = "; ".join(f"{p}: {m}" for p, m in absent.items())
            self.notify(f"saved {path}; {said} (launch waits until it is there)", severity="warning", timeout=8)
        else:
            self.notify(f"saved {path}", timeout=3)

    # -- target picker ---------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#pick-targets")
    def _pick_pressed(self) -> None:
        self.action_pick_targets()

    def action_pick_targets(self) -> None:
        if self.values["method"]["kind"] not in LORA_METHODS:
            self.notify("target modules are only used by LoRA methods", severity="warning")
            return
        layers = self.known_layers()
        if layers is not None:
            self._open_picker(layers)
            return
        cfg = self.build_config()
        if cfg is None:
            self.notify("fix the form first", severity="error")
            return
        self.notify(f"reading the layers of {cfg.model.name}...", timeout=3)
        self.run_worker(partial(self._layers_thread, cfg, model_key(self.values)), name="layers",
                            group="setup-layers", description="Listing the model's linear layers",
                            thread=True, exclusive=True, exit_on_error=False)

    def _layers_thread(self, cfg: RunConfig, mkey: str) -> None:
        layers = setup_core.list_linear_layers(cfg)
        self.post_message(LayersReady(mkey, layers))

    @on(LayersReady)
    def _layers_ready(self, msg: LayersReady) -> None:
        self.layers_cache[msg.model_key] = msg.layers
        self.recheck_targets()
        self.after_change()
        if msg.model_key == model_key(self.values):
            self._open_picker(msg.layers)

    def _open_picker(self, layers: list[str]) -> None:
        current = self.values["lora"]["target_modules"]

        def picked(selected: list[str] | None) -> None:
            if selected is None:
                return
            self.field("lora.target_modules").set_value(selected)
            self.field("lora.target_modules").control.focus()

        self.app.push_screen(setup_modals().TargetPicker(layers, current, self.values["model"]["name"]), picked)

    # -- the adapter to continue (method.start_from) -------------------------------------------------------------

    @on(Button.Pressed, "#pick-start")
    def action_pick_start(self) -> None:
        """Pick a run whose adapter the new run continues (an SFT run's before DPO): its folder goes into Start
        from (the engine reads a run folder's adapter/)."""
        from loratui.core.adapters import find_adapters

        runs_dir = Path(self.app.runs_dir)
        task = PEFT_TASK_TYPES[self.values["model"].get("task") or "causal-lm"]
        found = [a for a in find_adapters([runs_dir], max_depth=1) if a.kind == "adapter" and not a.incomplete
                 and (a.task or task) == task]  # a classifier's adapter does not continue into a language model's
        if not found:
            self.notify(f"no run in {runs_dir} has a saved adapter for this task yet: type an adapter folder instead",
                        severity="warning")
            return

        def picked(path: str | None) -> None:
            if path:
                ff = self.field("method.start_from")
                ff.set_value(path)
                ff.control.focus()

        model = self.values["model"]["name"]
        same = [not a.base_model or a.base_model.endswith(model) for a in found]
        choices = [(str(a.path.parent.resolve()), f"{a.run or a.name}  ·  r={a.r}  ·  {a.created_text}"
                    + ("" if ok else f"  ·  base {a.base_model}"))
                   for ok, a in sorted(zip(same, found), key=lambda p: not p[0])]  # this model's first
        self.app.push_screen(ChoiceModal("Continue the adapter of a run", choices, body=(
            "The new run trains this adapter further (its LoRA settings replace the form's); a DPO run's "
            "reference is then this adapter, frozen.")), picked)

def _is_sample(path: str) -> bool:
    try:
        return any(Path(path).resolve().is_relative_to(d.resolve()) for d in setup_core.sample_configs_dirs())
    except Exception:
        return False


def _default_name(cfg: RunConfig) -> str:
    from loratui.core.runs import slug

    objective = "" if cfg.method.objective == "sft" else f"-{cfg.method.objective}"
    return cfg.output.name or f"{slug(cfg.model.name)}-{cfg.method.kind}{objective}"
