"""Preference objectives (``method.objective``: dpo, orpo, kto) on TRL's own trainers, inside the same engine.

The engine's Trainer classes (checkpoints written whole, tokens counted on the device, fault hooks) are mixed onto
TRL's ``DPOTrainer``, ``ORPOTrainer`` (trl.experimental) or ``KTOTrainer`` exactly as they are onto transformers'
``Trainer`` for sft, so the run folder, the events, stop / resume and the checkpoints are the same. TRL tokenizes
the rows (``loratui.train.data.preference`` checked them), computes the losses and logs the rewards.

The reference (dpo, kto): the model is a PEFT model and no ``ref_model`` is given, so TRL needs no second copy. A new
adapter's reference is the base with the adapter switched off. An adapter continued from ``method.start_from`` (an
SFT run's) keeps TRL's frozen copy of that adapter as the reference (adapter-sized, not a model): DPO measures how
far the policy moves from where it started. orpo has no reference.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from loratui.core.config import RunConfig

#: objective -> (module, trainer class, config class)
TRAINERS = {
    "dpo": ("trl", "DPOTrainer", "DPOConfig"),
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig"),
    "kto": ("trl", "KTOTrainer", "KTOConfig"),
}
#: PEFT saves an adapter other than the trained one in a subfolder of its name: TRL's frozen reference copy
REF_ADAPTER = "ref"


def trl_classes(objective: str):
    """(trainer class, config class) of TRL for ``objective``."""
    import importlib
    import warnings

    module, trainer, config = TRAINERS[objective]
    with warnings.catch_warnings():  # trl.experimental says it is experimental on import
        warnings.simplefilter("ignore")
        mod = importlib.import_module(module)
    return getattr(mod, trainer), getattr(mod, config)


def config_fields(cfg: RunConfig, max_length: int) -> dict:
    """The TRL config's own fields for this run (the rest are the TrainingArguments every run gets)."""
    m, objective = cfg.method, cfg.method.objective
    fields = {"beta": m.beta, "max_length": max_length}
    if objective == "dpo":
        fields.update(loss_type=[m.loss_type], label_smoothing=m.label_smoothing)
    elif objective == "kto":
        fields.update(desirable_weight=m.desirable_weight, undesirable_weight=m.undesirable_weight)
    return fields


def trainer_base(objective: str, token_counting):
    """The engine's token-counting Trainer mixed onto TRL's trainer for ``objective`` (MRO: ours, then TRL's, then
    transformers' Trainer), ready for :func:`loratui.train.trainers.trainer_class` to add the whole-checkpoint
    saves on top."""
    trl_trainer, _ = trl_classes(objective)

    class PreferenceTrainer(token_counting, trl_trainer):
        def training_step(self, model, inputs, *args, **kwargs):
            if "attention_mask" in inputs or "input_ids" in inputs:
                return super().training_step(model, inputs, *args, **kwargs)
            # ORPO's batches hold the chosen and rejected sequences under their own names: count both here, then
            # go on past the counting trainer (it reads ``attention_mask``)
            n = sum(inputs[k].sum() for k in ("chosen_attention_mask", "rejected_attention_mask") if k in inputs)
            self._tokens = n if self._tokens is None else self._tokens + n
            return super(token_counting, self).training_step(model, inputs, *args, **kwargs)

        def _save(self, output_dir=None, state_dict=None):
            super()._save(output_dir, state_dict)
            # the adapter folder holds the trained adapter only, not TRL's frozen reference copy
            if self.args.should_save:
                shutil.rmtree(Path(output_dir or self.args.output_dir) / REF_ADAPTER, ignore_errors=True)

    PreferenceTrainer.__name__ = PreferenceTrainer.__qualname__ = f"Loratui{trl_trainer.__name__}"
    return PreferenceTrainer


def settle_reference(trainer, cfg: RunConfig) -> str:
    """After TRL's trainer is built: a new adapter's reference is the base with the adapter off (TRL's copy of the
    untrained adapter is dropped: at zero it adds nothing); a continued adapter keeps its frozen copy. Returns what
    the reference is, for the log."""
    if cfg.method.objective == "orpo":
        return "none (orpo is reference-free)"
    model = trainer.accelerator.unwrap_model(trainer.model)
    peft_config = getattr(model, "peft_config", {})
    if REF_ADAPTER in peft_config and not cfg.method.start_from:
        model.delete_adapter(REF_ADAPTER)
        model.set_adapter("default")
    if REF_ADAPTER in getattr(model, "peft_config", {}):
        return f"the adapter it started from ({cfg.method.start_from}), frozen"
    return "the base model (adapter off)"


def eval_rows_for(trainer, cfg: RunConfig, rows):
    """A held-out set for ``trainer.evaluate``: dpo and kto prepare raw rows themselves; orpo's evaluate does not,
    so its rows go through the same maps its constructor ran."""
    if rows is None or cfg.method.objective != "orpo":
        return rows
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    rows = rows.map(maybe_extract_prompt)
    rows = rows.map(maybe_apply_chat_template, fn_kwargs={"processing_class": trainer.processing_class})
    return rows.map(trainer.tokenize_row)
