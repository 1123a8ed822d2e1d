"""Checks run before any heavy work (no weights loaded): each bad input fails with one line naming field and fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loratui.core.config import RunConfig
from loratui.core.errors import ConfigError, ModelError


@dataclass
class Preflight:
    resolved: Any  # models.ResolvedModel
    model_config: Any
    precision: str
    max_length_limit: int | None


def check(cfg: RunConfig, *, data: bool = True) -> Preflight:
    """Validate ``cfg`` against the model, the hardware and the data. Raises LoratuiError."""
    from loratui.train import models

    if cfg.quantized or cfg.train.optimizer in ("paged_adamw_8bit", "adamw_8bit", "paged_adamw_32bit"):
        field = "method.kind" if cfg.quantized else "train.optimizer"
        what = cfg.method.kind if cfg.quantized else cfg.train.optimizer
        if not models.cuda_available():
            raise ConfigError(f"{what} needs a CUDA GPU and none is visible", field=field,
                              hint=f"use {'method lora' if cfg.quantized else 'optimizer adamw_torch'} on this "
                                   "machine, or run on a GPU box")
        if not models.bitsandbytes_available():
            raise ConfigError(f"{what} needs bitsandbytes", field=field, hint="pip install bitsandbytes")
    precision = models.choose_precision(cfg)
    resolved = models.resolve_model(cfg.model)
    model_config = models.load_model_config(cfg, resolved)
    if any(v == "on" for v in cfg.train.model_dump().values()) or cfg.data.packing == "on" or \
            cfg.train.attention != "auto":  # a speed lever asked for that cannot work here: before any run folder
        from loratui.train import speed

        speed.resolve(cfg, models.cuda_available(), getattr(model_config, "model_type", None))
    limit = models.model_max_length(model_config)
    if limit and cfg.data.max_length > limit:
        raise ConfigError(f"{cfg.data.max_length} is above this model's limit of {limit} tokens",
                          field="data.max_length", hint=f"set it to {limit} or less")
    if cfg.uses_lora:
        meta = models.build_meta_model(cfg, model_config)
        models.resolve_targets(cfg, meta)
        for name in cfg.lora.modules_to_save:
            if not any(n.rsplit(".", 1)[-1] == name for n, _ in meta.named_modules()):
                from loratui.core.fmt import printable

                raise ModelError(f"{printable(name, 80)} not in this model", field="lora.modules_to_save",
                                 hint="name a module such as " + ", ".join(models.head_names(meta) or ["classifier"]))
    import importlib.util

    for tool, packages in (("tensorboard", ("tensorboard", "tensorboardX")), ("wandb", ("wandb",))):
        if tool in cfg.train.report_to and not any(importlib.util.find_spec(p) for p in packages):
            raise ConfigError(f"{tool} reporting needs the {packages[0]} package", field="train.report_to",
                              hint=f"pip install {packages[0]}, or remove {tool} from train.report_to")
    if cfg.method.kind == "head-only" and cfg.model.task != "seq-cls":
        raise ConfigError("head-only needs model.task seq-cls", field="method.kind", hint="use lora or full")
    if data:
        from loratui.train import data as data_mod

        train, _val = data_mod.load_splits(cfg)
        if cfg.model.task == "seq-cls":
            data_mod.label_names(cfg, train)  # one label only (nothing to learn) is said here, before a run exists
    return Preflight(resolved=resolved, model_config=model_config, precision=precision, max_length_limit=limit)
