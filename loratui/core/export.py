"""GGUF export, the light half: the types a user can ask for, the names of what lands in the output folder, the
README written beside the files, the report's table, and the exports the Adapters screen lists. The heavy half
(merge, convert, quantize, verify) is ``loratui.train.export``. Light module: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loratui.core.errors import LoratuiError
from loratui.core.fmt import format_bytes


@dataclass(frozen=True)
class GgufType:
    name: str
    bits: float          # bits per weight, about (for the disk-space check)
    converter: bool      # written by llama.cpp's converter directly; else quantized by llama.cpp from f16
    about: str


GGUF_TYPES: dict[str, GgufType] = {t.name: t for t in (
    GgufType("f16", 16, True, "half precision, the reference"),
    GgufType("bf16", 16, True, "bfloat16, as most models are trained"),
    GgufType("q8_0", 8.5, True, "8-bit, near-lossless"),
    GgufType("q6_k", 6.6, False, "6-bit k-quant"),
    GgufType("q5_k_m", 5.7, False, "5-bit k-quant"),
    GgufType("q4_k_m", 4.9, False, "4-bit k-quant, what Ollama users pick"),
    GgufType("q4_0", 4.5, False, "4-bit, legacy"),
)}
#: the one list the CLI's --gguf and the app's Export screen both offer, in this order
TYPES_HELP = ", ".join(GGUF_TYPES)
DEFAULT_TYPE = "q4_k_m"  # what ``loratui export`` writes without --gguf
REPORT = "export.json"
#: the folders a run writes its models to (runs/NAME/adapter, /merged, /model): an export of one goes beside them
#: (runs/NAME/gguf) and takes the run's name for ollama
RUN_MODEL_FOLDERS = ("adapter", "merged", "model")
HF_DIR = "hf-merged"     # the merged model the converter reads, inside the temporary folder only


def parse_types(text: str | list[str] | None) -> list[str]:
    """'f16,q4_k_m' -> ['f16', 'q4_k_m'] (case and spaces forgiven, duplicates dropped, order kept)."""
    items = text if isinstance(text, list) else str(text or "").split(",")
    out: list[str] = []
    for raw in items:
        name = str(raw).strip().lower().replace("-", "_")
        if not name:
            continue
        if name not in GGUF_TYPES:
            raise LoratuiError(f"unknown GGUF type '{str(raw).strip()[:40]}'", field="--gguf",
                               hint="choose from " + ", ".join(GGUF_TYPES) + " (several: --gguf f16,q4_k_m)")
        if name not in out:
            out.append(name)
    if not out:
        raise LoratuiError("no GGUF type given", field="--gguf", hint="e.g. --gguf q4_k_m or --gguf f16,q8_0,q4_k_m")
    return out


def gguf_name(kind: str) -> str:
    return f"model-{kind}.gguf"


def modelfile_name(kind: str, first: bool) -> str:
    """``Modelfile`` for the first type asked for, ``Modelfile.q8_0`` for the others."""
    return "Modelfile" if first else f"Modelfile.{kind}"


def readme(report: dict) -> str:
    """How to run what was exported, with llama.cpp and with Ollama, and what the check found."""
    files = report.get("files", [])
    first = files[0]["file"] if files else "model-f16.gguf"
    lines = [f"# {report.get('name', 'model')}: GGUF export", "",
             f"Exported by `loratui export` from `{report.get('source', '?')}` (base model "
             f"`{report.get('base_model', '?')}`) on {report.get('date', '?')}.", "",
             "| file | type | size | same greedy answers as the merged model | top-1 agreement | tokens/s (CPU) |",
             "|---|---|---|---|---|---|"]
    for f in files:
        v = f.get("verify") or {}
        same = f"{v.get('same_answers', '-')}/{v.get('prompts', '-')}"
        agree = f"{v['top1']:.1%}" if v.get("top1") is not None else "-"
        tps = f"{v['tokens_per_s']:.0f}" if v.get("tokens_per_s") else "-"
        lines.append(f"| `{f['file']}` | {f['type']} | {format_bytes(f['size_bytes'])} | {same} | {agree} | {tps} |")
    lines += ["", "## llama.cpp", "", "```bash", f"llama-cli -m {first} -cnv", "```", "",
              "## Ollama", "", "```bash", f"ollama create {report.get('name', 'mymodel')} -f Modelfile",
              f"ollama run {report.get('name', 'mymodel')}", "```", ""]
    others = [f for f in files[1:]]
    if others:
        lines.append("`Modelfile` uses " + first + "; " + ", ".join(
            f"`{f['modelfile']}` uses {f['file']}" for f in others) + ".")
        lines.append("")
    tpl = report.get("template", {})
    if tpl.get("note"):
        lines += [f"Chat template: {tpl['note']}.", ""]
    lines += ["`export.json` holds every figure above and each prompt's answers.", ""]
    return "\n".join(lines)


def report_rows(report: dict) -> list[dict[str, str]]:
    """The export's table, one row a file after the merged model's own (the reference every file is checked
    against): type, size, same answers, top-1 agreement, tokens/s, exact answers where the prompts have them, and
    the verdict. ``loratui export`` prints it; the app's Export screen shows it."""
    rows = []
    ref = report.get("reference") or {}
    if ref:
        rows.append({"type": "merged", "size": "", "same": "", "top1": "",
                     "tps": f"{ref['tokens_per_s']:.0f}" if ref.get("tokens_per_s") else "-",
                     "exact": f"{ref['exact']}/{ref['with_reference']}" if ref.get("exact") is not None else "-",
                     "verdict": f"the reference: the merged model in transformers ({report.get('dtype', '?')})"})
    for f in report.get("files", []):
        v = f.get("verify") or {}
        rows.append({"type": f["type"], "size": format_bytes(f.get("size_bytes")),
                     "same": f"{v.get('same_answers', 0)}/{v.get('prompts', 0)}",
                     "top1": f"{v['top1']:.1%}" if v.get("top1") is not None else "-",
                     "tps": f"{v['tokens_per_s']:.0f}" if v.get("tokens_per_s") else "-",
                     "exact": f"{v['exact']}/{v['with_reference']}" if v.get("exact") is not None else "-",
                     "verdict": str(v.get("verdict", ""))})
    return rows


def format_report(report: dict) -> str:
    """The table ``loratui export`` prints at the end."""
    lines = [f"{'type':<8} {'size':>10} {'same answers':>13} {'top-1':>7} {'tok/s':>7}  {'exact':>7}  verdict"]
    for r in report_rows(report):
        lines.append(f"{r['type']:<8} {r['size']:>10} {r['same']:>13} {r['top1']:>7} {r['tps']:>7}  {r['exact']:>7}  "
                     f"{r['verdict']}")
    return "\n".join(lines)


def verdict(same: int, prompts: int, top1: float | None, tokenizer_ok: bool) -> str:
    """One plain sentence per file: does llama.cpp answer as the merged model does?"""
    if not tokenizer_ok:
        return "✖ llama.cpp tokenizes the prompts differently from the model's own tokenizer"
    if same == prompts:
        return "✔ the same greedy answers as the merged model"
    agree = f", top-1 agreement {top1:.1%}" if top1 is not None else ""
    return f"⚠ changes {prompts - same} of {prompts} greedy answers{agree}"


@dataclass
class Exported:
    path: Path
    size: int
    kind: str


def list_exports(folder: str | Path) -> list[Exported]:
    """The .gguf files in an export folder (or beside an adapter), largest first; [] when there are none."""
    folder = Path(folder)
    out = []
    try:
        entries = sorted(folder.glob("*.gguf"))
    except OSError:
        return []
    for p in entries:
        try:
            out.append(Exported(p, p.stat().st_size, p.stem.removeprefix("model-")))
        except OSError:
            continue
    return sorted(out, key=lambda e: -e.size)


def exports_near(adapter: str | Path) -> list[tuple[str, Exported]]:
    """The GGUF files exported from an adapter (or a merged folder), as the Adapters screen and the Playground list
    them, each with its folder's name: in the folder itself, and in the folders where exports of it land: beside a
    run's adapter (runs/NAME/gguf, runs/NAME/merged-gguf, ...), runs/NAME/gguf-checkpoint-N for a checkpoint,
    FOLDER-gguf beside any other folder. A folder with an export report belongs to the source the report names (a
    run's adapter also owns the exports of the run's merged model); one without a report goes by those names, so a
    checkpoint's export is not its run's adapter's, and another adapter's folder beside a loose one is not its."""
    folder = Path(adapter)
    home = folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
    try:
        dirs = sorted(d for d in home.iterdir() if d.is_dir() and d != folder and not d.name.startswith("."))
    except OSError:
        dirs = []
    own = [d for d in dirs if _export_of(d, folder)]
    return [(d.name, e) for d in [folder, *own] for e in list_exports(d)]


def _export_of(d: Path, folder: Path) -> bool:
    """Whether the folder ``d`` beside ``folder`` holds exports of it (exports_near)."""
    checkpoint = folder.parent.name == "checkpoints"
    run_model = folder.name in RUN_MODEL_FOLDERS and not checkpoint
    report = read_report(d)
    if report is not None and report.get("source"):
        source = Path(str(report["source"])).expanduser()
        same = [folder] + ([folder.parent / m for m in RUN_MODEL_FOLDERS] if run_model else [])
        try:
            return any(source.resolve() == f.resolve() for f in same)
        except OSError:
            return False
    if checkpoint:
        return d.name in (f"gguf-{folder.name}", f"{folder.name}-gguf")
    if run_model:  # a run's own folders, where its exports land; not its checkpoints' or their exports
        return d.name != "checkpoints" and not d.name.startswith("gguf-checkpoint-")
    return d.name == f"{folder.name}-gguf"


def read_report(folder: str | Path) -> dict | None:
    try:
        data = json.loads((Path(folder) / REPORT).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- which prompts the check asks -----------------------------------------------------------------------------------

#: what the export says when the model has no run with a held-out set (a merged folder from elsewhere, no split)
GENERAL_PROMPTS = "general prompts: no held-out set found for this model"


def run_config_path(folder: Path) -> Path | None:
    """The config.yaml of the run behind an adapter (runs/NAME/adapter, a checkpoint) or a merged model (its
    loratui-merge.json names the adapter it was merged from)."""
    folder = Path(folder)
    candidates = [folder.parent / "config.yaml", folder.parent.parent / "config.yaml"]
    merged = folder / "loratui-merge.json"
    if merged.is_file():
        try:
            adapter = Path(json.loads(merged.read_text()).get("adapter") or "")
        except (OSError, ValueError, AttributeError):
            adapter = None
        if adapter is not None and str(adapter) not in ("", "."):
            candidates = [adapter.parent / "config.yaml", adapter.parent.parent / "config.yaml", *candidates]
    return next((p for p in candidates if p.is_file()), None)


def held_out_description(cfg) -> str | None:
    """Where a run's held-out prompts come from, in words; None when the run held none out."""
    d = cfg.data
    if d.validation_file:
        return f"the run's validation file {d.validation_file}"
    if d.validation_fraction and d.validation_fraction > 0:
        return (f"the run's held-out {d.validation_fraction:.0%} of {d.source} "
                f"(split with seed {cfg.train.seed}, as in training)")
    return None


def prompts_note(folder: Path | None) -> str:
    """The export form's line on what the check will ask, for the model in ``folder``."""
    from loratui.core.config import load_config

    if folder is None:
        return ("Each file is loaded back by llama.cpp and asked the held-out prompts of the run behind the model "
                "(general prompts when none is found); its answers are compared with the merged model's.")
    path = run_config_path(folder)
    try:
        where = held_out_description(load_config(path)) if path is not None else None
    except LoratuiError:
        where = None
    return ("Each file is loaded back by llama.cpp and asked the same prompts as the merged model, its answers "
            "compared with the merged model's: " + (where or GENERAL_PROMPTS) + ".")
