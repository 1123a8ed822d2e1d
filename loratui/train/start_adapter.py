"""``method.start_from``: a run continues training an adapter it did not create (an SFT run's, before DPO), instead
of a new one on the base. Torch side."""

from __future__ import annotations

from pathlib import Path

from loratui.core.config import RunConfig
from loratui.core.errors import ModelError


def adapter_folder(spec: str) -> Path:
    """The adapter folder ``spec`` names: the folder itself, or a run folder's ``adapter/``."""
    path = Path(spec).expanduser()
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    what = "does not exist" if not path.exists() else "holds no adapter (no adapter_config.json, nor adapter/)"
    raise ModelError(f"{spec} {what}", field="method.start_from",
                     hint="give an adapter folder or a finished run's folder, or leave it empty for a new adapter")


def load_start_adapter(cfg: RunConfig, model):
    """``model`` (the base, prepared for its method) with the adapter of ``method.start_from`` on it, trainable."""
    from peft import PeftModel

    folder = adapter_folder(cfg.method.start_from)
    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    except Exception as err:  # noqa: BLE001 - shapes of another base, a broken file: one line
        text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot continue the adapter in {folder}: {text}", field="method.start_from",
                         hint="the adapter must have been trained on this base model") from None
