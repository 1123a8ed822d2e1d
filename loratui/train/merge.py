"""Merge an adapter into its base model for deployment, and verify the result.

The base is always loaded unquantized in the chosen dtype (a QLoRA adapter's 4-bit base is reloaded in fp16/bf16).
The output is written to a temporary folder beside the target and renamed when complete, so an interrupted merge
leaves nothing half-written. The merged model is reloaded with ``AutoModelFor...`` and compared with the adapter
model on a probe input: the relative difference of their logits against what the dtype's rounding explains, and
whether the top token at each position (the label, for a classifier) agrees (``loratui.core.merge_check``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from loratui.core.checkpoints import folder_bytes
from loratui.core.config import ModelSection
from loratui.core.config_base import task_of_peft
from loratui.core.errors import LoratuiError
from loratui.core.merge_check import DEFAULT_MERGE_DTYPE, judge

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
PROBE = "The quick brown fox jumps over the lazy dog. LoRA adapters merge into their base model."


class MergeError(LoratuiError):
    pass


def read_adapter_meta(adapter: Path) -> dict:
    adapter = Path(adapter)
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.is_file():
        raise MergeError(f"{adapter} holds no adapter_config.json", field="adapter",
                         hint="pick a folder saved by a LoRA run (runs/NAME/adapter)")
    meta = json.loads(cfg_file.read_text())
    extra = adapter / "loratui.json"
    if extra.is_file():
        meta["loratui"] = json.loads(extra.read_text())
    return meta


def adapter_base(adapter: Path, base: str | None = None) -> tuple[ModelSection, dict]:
    """The base model an adapter was trained on, as a model section (name, task, num_labels), plus the run's
    metadata from loratui.json ({} for adapters saved elsewhere)."""
    meta = read_adapter_meta(adapter)
    info = meta.get("loratui", {})
    task = info.get("task") or task_of_peft(meta.get("task_type"))
    name = base or info.get("base_model") or meta.get("base_model_name_or_path")
    if not name:
        raise MergeError("the adapter does not name its base model", field="base", hint="give the base model")
    return ModelSection(name=name, task=task, num_labels=info.get("num_labels") or 2), info


def check_adapter(adapter: Path, *, allow_pickle: bool = False) -> None:
    """One-line error for an adapter that is incomplete (truncated weights, a save cut short) or pickle-only."""
    from loratui.core.checkpoints import adapter_problem
    from loratui.train.models import check_pickle

    if not (Path(adapter) / "adapter_config.json").is_file():
        return  # not an adapter at all: read_adapter_meta says so
    problem = adapter_problem(Path(adapter))
    if problem and not (problem.startswith("no weights") and _has_pickle_weights(adapter)):
        raise MergeError(f"the adapter in {adapter} is incomplete: {problem}", field="adapter",
                         hint="re-save it from the run's newest complete checkpoint, or train again")
    check_pickle(adapter, allow_pickle, field="adapter", what="adapter")


def _has_pickle_weights(adapter: Path) -> bool:
    return (Path(adapter) / "adapter_model.bin").is_file()


def clean_stale_partials(folder: Path) -> list[Path]:
    """Remove ``.NAME.partial-PID`` folders that a killed merge left behind (their process is gone)."""
    gone = []
    try:
        candidates = [p for p in Path(folder).iterdir() if p.name.startswith(".") and ".partial-" in p.name]
    except OSError:
        return gone
    for p in candidates:
        pid = p.name.rsplit(".partial-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # a merge still running writes there
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        gone.append(p)
    return gone


def adapter_tokenizer(adapter: Path, resolved):
    """The tokenizer saved with the adapter, else the base model's."""
    from transformers import AutoTokenizer

    if (adapter / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(adapter))
    return AutoTokenizer.from_pretrained(resolved.path, **resolved.kwargs())


def load_adapter_model(adapter: Path, *, base: str | None = None, dtype: str = DEFAULT_MERGE_DTYPE,
                       progress: Callable[[str, float], None] = lambda step, frac: None,
                       allow_pickle: bool = False):
    """Base model (unquantized, in ``dtype``) + adapter, ready to merge: (peft model in eval mode, tokenizer,
    {cls, base_name, task, torch_dtype, section, info}). Every failure is a one-line MergeError."""
    import torch
    from peft import PeftModel

    from loratui.train import models

    check_adapter(adapter, allow_pickle=allow_pickle)
    section, info = adapter_base(adapter, base)
    base_name, task = section.name, section.task
    progress("loading base model", 0.05)
    resolved = models.resolve_model(section)
    torch_dtype = getattr(torch, DTYPES[dtype])
    cls = models.auto_class(task)
    kwargs = {"num_labels": section.num_labels} if task == "seq-cls" else {}
    labels = info.get("labels")
    if task == "seq-cls" and labels and len(labels) == section.num_labels:
        kwargs.update(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    if resolved.local:
        models.check_pickle(resolved.path, allow_pickle, field="base")
    if not allow_pickle and not resolved.gguf_file:
        kwargs["use_safetensors"] = True
    try:
        base_model = cls.from_pretrained(resolved.path, dtype=torch_dtype, **resolved.kwargs(), **kwargs)
    except Exception as err:  # noqa: BLE001 - a refused pickle raises whatever the loader raises
        if models.is_unsafe_pickle_error(err):
            raise models.unsafe_pickle_error(resolved.path, field="base") from None
        if not isinstance(err, (OSError, ValueError)):
            raise
        raise MergeError(f"cannot load base model {base_name}: {str(err).splitlines()[0][:160]}", field="base",
                         hint="give the base model folder or hub id with --base") from None
    tokenizer = adapter_tokenizer(adapter, resolved)
    progress("applying adapter", 0.35)
    try:
        model = PeftModel.from_pretrained(base_model, str(adapter))
    except Exception as err:
        if models.is_unsafe_pickle_error(err):
            raise models.unsafe_pickle_error(adapter, field="adapter") from None
        meta = read_adapter_meta(adapter)
        trained_on = meta.get("loratui", {}).get("base_model") or meta.get("base_model_name_or_path") or ""
        if "size mismatch" in str(err) or "shape" in str(err).lower():
            raise MergeError(f"the adapter in {adapter} was trained on {trained_on or 'another base'}, this base is "
                             f"{base_name}: their layer shapes differ", field="base",
                             hint="merge it onto the base it was trained on (leave --base out to use it)") from None
        raise MergeError(f"cannot load the adapter in {adapter}: {str(err).strip()[:160] or type(err).__name__}",
                         field="adapter", hint="the adapter may be incomplete or damaged") from None
    model.eval()
    return model, tokenizer, {"cls": cls, "base_name": base_name, "task": task, "torch_dtype": torch_dtype,
                              "section": section, "info": info}


def merge_adapter(adapter: str | Path, output: str | Path, *, base: str | None = None,
                  dtype: str = DEFAULT_MERGE_DTYPE,
                  progress: Callable[[str, float], None] = lambda step, frac: None,
                  allow_pickle: bool = False) -> dict:
    import torch

    adapter, output = Path(adapter).expanduser(), Path(output).expanduser()
    if dtype not in DTYPES:
        raise MergeError(f"unknown dtype {dtype}", field="dtype", hint="choose fp16, bf16 or fp32")
    if output.is_symlink():
        output = output.resolve()  # a link to an (empty) folder: the merge goes into that folder
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MergeError(f"{output} already exists and is not empty", field="output",
                         hint="choose a new folder; nothing was overwritten")
    if output.parent.is_dir():
        clean_stale_partials(output.parent)  # a killed merge's half output (0.5 GB each)
    tmp = output.with_name(f".{output.name}.partial-{os.getpid()}")
    try:  # the output's place is checked before the work, not after it
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        tmp.rmdir()
    except OSError as err:
        raise MergeError(f"cannot write the merged model beside {output}: {err.strerror or err}", field="output",
                         hint="choose a folder on a writable disk") from None
    t0 = time.time()
    model, tokenizer, loaded = load_adapter_model(adapter, base=base, dtype=dtype, progress=progress,
                                                  allow_pickle=allow_pickle)
    cls, base_name, task, torch_dtype = loaded["cls"], loaded["base_name"], loaded["task"], loaded["torch_dtype"]
    probe = tokenizer(PROBE, return_tensors="pt")
    # the check runs both models in fp32 on the weights as stored, so it sees the merge's own rounding (W + BA
    # rounded once into dtype) and not the dtype's arithmetic through every layer, which on the embedded 135M model
    # alone moves bf16 logits 1.6-3.1% and hid a wrong scaling
    model.float()
    with torch.no_grad():
        expected = model(**probe).logits.float()
    progress("merging", 0.5)
    merged = model.merge_and_unload().to(torch_dtype)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        progress("saving", 0.65)
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "loratui-merge.json").write_text(json.dumps(
            {"adapter": str(adapter.resolve()), "base_model": base_name, "dtype": dtype, "task": task}, indent=1))
        progress("verifying", 0.85)
        del merged, model
        reloaded = cls.from_pretrained(str(tmp), dtype=torch_dtype).float()
        reloaded.eval()
        with torch.no_grad():
            got = reloaded(**probe).logits.float()
        max_diff = float((got - expected).abs().max())
        check = compare_logits(expected, got, dtype, task)
        from loratui.core.fileio import respect_umask

        respect_umask(tmp)
        if output.exists():
            output.rmdir()
        output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = folder_bytes(output)
    progress("done", 1.0)
    return {"output": str(output), "size_bytes": size, "max_diff": max_diff, "check": check,
            "seconds": round(time.time() - t0, 2), "dtype": dtype, "base_model": base_name, "task": task}


def compare_logits(expected, got, dtype: str, task: str) -> dict:
    """The merge check (``loratui.core.merge_check.judge``) for the probe's logits through both models."""
    rel = float((got - expected).norm() / expected.norm().clamp_min(1e-12))
    top_expected, top_got = expected.argmax(-1), got.argmax(-1)
    agree = int((top_expected == top_got).sum())
    return judge(rel, agree, int(top_expected.numel()), dtype, task)
