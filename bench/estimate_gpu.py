"""The estimate Setup shows before launch against the NVML peak of the same run on the lent GPU (issue 10), for the
runs `bench/speed.py` does not cover: the MiniLM classifier of `sample_configs/minilm-sentiment.yaml` (padded,
with its validation file), and the 1B LoRA defaults with a validation set (evaluation computes full logits).

The MiniLM side is a random-init BERT of all-MiniLM-L6-v2's shape with its tokenizer (`--minilm DIR`: config and
tokenizer files, no weights; memory depends on the shape only), so nothing is downloaded.

    python bench/estimate_gpu.py --minilm .gpu/minilm-shape
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpu_engine import workspace  # noqa: E402
from speed import loratui_config, run_child, run_events  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def minilm_folder(src: Path, work: Path) -> Path:
    from transformers import BertConfig, BertModel

    out = work / "minilm-shape"
    if not (out / "model.safetensors").is_file():
        shutil.copytree(src, out, dirs_exist_ok=True)
        BertModel(BertConfig.from_pretrained(str(src))).save_pretrained(str(out))
    return out


def measure(name: str, cfg: dict, work: Path, out: Path) -> dict:
    from loratui.core.config import RunConfig
    from loratui.train.estimate import estimate_memory

    path = work / f"est-{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    est = estimate_memory(RunConfig.model_validate(cfg), compare=False, cuda=True).rows[0].total / 2**30
    run_dir = Path(cfg["output"]["runs_dir"]) / cfg["output"]["name"]
    if run_dir.exists():
        shutil.rmtree(run_dir)
    rc, _, nvml = run_child([sys.executable, "-m", "loratui", "train", str(path)], out / f"est-{name}.log", 600)
    mem = [e for e in run_events(run_dir) if e["kind"] == "memory"]
    torch_peak = max((e["peak_allocated_gb"] for e in mem), default=None)
    res = {"run": name, "exit": rc, "estimate_gib": round(est, 2), "nvml_peak_gib": round(nvml, 2),
           "torch_peak_gib": torch_peak, "estimate_vs_nvml": round(est / nvml - 1, 3) if nvml else None}
    print(json.dumps(res), flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minilm", default=".gpu/minilm-shape")
    ap.add_argument("--tokenizer", default=".gpu/tokenizer")
    args = ap.parse_args()
    out, work, model_dir, data = workspace("1b", args.tokenizer)
    runs = work / "est-runs"
    results = []
    cfg = yaml.safe_load((REPO / "sample_configs/minilm-sentiment.yaml").read_text())
    cfg["model"]["name"] = str(minilm_folder(Path(args.minilm), work))
    cfg["output"] = {"runs_dir": str(runs), "name": "minilm-sentiment"}
    results.append(measure("minilm-sentiment", cfg, work, out))
    big = loratui_config(SimpleNamespace(method="lora", steps=40, batch=16), model_dir, data, runs, "1b-val",
                         "default")
    big["data"]["validation_fraction"] = 0.05
    big["train"].update(eval_steps=20, eval_on_start=True)
    results.append(measure("1b-lora-default-with-eval", big, work, out))
    (out / "results-estimate.json").write_text(json.dumps(results, indent=1))
    print("| run | estimate GiB | NVML peak GiB | estimate vs NVML | torch peak GiB |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['estimate_gib']} | {r['nvml_peak_gib']} | "
              f"{100 * (r['estimate_vs_nvml'] or 0):+.1f}% | {r['torch_peak_gib']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
