"""loratui.core.adapters against real files on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from fixtures import copy_runs
from loratui.core.adapters import delete_adapter, find_adapters, read_adapter, safetensors_param_count
from loratui.core.errors import LoratuiError


def write_adapter(folder: Path, *, r: int = 4, targets=("q_proj", "v_proj"), base="org/base-model",
                  task="CAUSAL_LM", layers: int = 2, extra: dict | None = None) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i in range(layers):
        for t in targets:
            tensors[f"base_model.model.layers.{i}.{t}.lora_A.weight"] = np.ones((r, 32), dtype=np.float32)
            tensors[f"base_model.model.layers.{i}.{t}.lora_B.weight"] = np.zeros((16, r), dtype=np.float16)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {"base_model_name_or_path": base, "task_type": task, "peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
           "target_modules": list(targets), **(extra or {})}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return tensors


def test_read_adapter_fields_and_sizes(tmp_path):
    folder = tmp_path / "my-adapter"
    tensors = write_adapter(folder, r=4, targets=("v_proj", "q_proj"))
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("hello")
    info = read_adapter(folder)
    assert info.name == "my-adapter" and info.kind == "folder" and info.run is None
    assert info.base_model == "org/base-model" and info.task == "CAUSAL_LM" and info.peft_type == "LORA"
    assert info.r == 4 and info.alpha == 8 and info.targets == ["q_proj", "v_proj"]
    assert info.targets_text == "q_proj, v_proj"
    assert info.trainable_params == sum(a.size for a in tensors.values())
    # the safetensors library agrees with the header count
    with safe_open(str(folder / "adapter_model.safetensors"), framework="numpy") as fh:
        assert sum(fh.get_tensor(k).size for k in fh.keys()) == info.trainable_params
    on_disk = {p.relative_to(folder).as_posix(): os.path.getsize(p) for p in folder.rglob("*") if p.is_file()}
    assert dict(info.files) == on_disk
    assert [n for n, _ in info.files] == sorted(on_disk)
    assert info.size == sum(on_disk.values())
    assert info.created == pytest.approx(os.path.getmtime(folder / "adapter_config.json"))
    assert info.error is None


def test_all_linear_and_missing_weights(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"target_modules": "all-linear", "r": 16}))
    info = read_adapter(folder)
    assert info.targets_text == "all-linear" and info.trainable_params is None and info.base_model is None


def test_broken_files_are_reported_not_raised(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{not json")
    (folder / "adapter_model.safetensors").write_bytes(b"\x01")
    info = read_adapter(folder)
    assert info.error and "adapter_config.json" in info.error
    assert info.trainable_params is None


def test_safetensors_param_count(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file({"a": np.zeros((3, 5), np.float32), "b": np.zeros((7,), np.int8), "c": np.zeros((), np.float32)}, str(p))
    assert safetensors_param_count(p) == 15 + 7 + 1


def test_find_adapters_in_runs_folder(tmp_path):
    runs = copy_runs(tmp_path)
    found = find_adapters([runs])
    names = sorted(a.name for a in found)
    assert names == ["smollm2-demo", "smollm2-demo/checkpoint-100", "smollm2-demo/checkpoint-200",
                     "smollm2-stopped", "smollm2-stopped/checkpoint-100"]
    demo = next(a for a in found if a.name == "smollm2-demo")
    assert demo.kind == "adapter" and demo.run == "smollm2-demo" and demo.path == runs / "smollm2-demo" / "adapter"
    assert demo.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert demo.trainable_params == 30 * (8 * 576 + 576 * 8 + 8 * 576 + 192 * 8)
    for a in found:
        assert a.size == sum(os.path.getsize(p) for p in a.path.rglob("*") if p.is_file())
    ck = next(a for a in found if a.name == "smollm2-demo/checkpoint-100")
    assert ck.kind == "checkpoint" and ck.run == "smollm2-demo"
    # newest first
    assert [a.created for a in found] == sorted((a.created for a in found), reverse=True)


def test_find_adapters_user_folders_recursive_bounded(tmp_path):
    user = tmp_path / "mine"
    write_adapter(user / "a")
    write_adapter(user / "x" / "y" / "b")
    write_adapter(user / "1" / "2" / "3" / "4" / "5" / "too-deep")
    write_adapter(user / ".hidden" / "c")
    write_adapter(user / "node_modules" / "d")
    write_adapter(user / "outer")
    write_adapter(user / "outer" / "inner")  # inside an adapter: not searched
    (tmp_path / "link").symlink_to(user / "a")
    found = find_adapters([user, user, tmp_path / "link", tmp_path / "missing"])
    assert sorted(a.name for a in found) == ["a", "b", "outer"]
    assert len(find_adapters([user], max_depth=10)) == 4
    assert find_adapters([]) == []


def test_delete_adapter_removes_only_that_folder(tmp_path):
    runs = copy_runs(tmp_path)
    target = runs / "smollm2-demo" / "checkpoints" / "checkpoint-100"
    before = {p for p in runs.rglob("*")}
    delete_adapter(target)
    after = {p for p in runs.rglob("*")}
    assert not target.exists()
    assert before - after == {p for p in before if p == target or target in p.parents}
    assert (runs / "smollm2-demo" / "checkpoints" / "checkpoint-200" / "adapter_config.json").is_file()


def test_delete_adapter_refuses_non_adapters(tmp_path):
    runs = copy_runs(tmp_path)
    with pytest.raises(LoratuiError, match="not an adapter"):
        delete_adapter(runs / "smollm2-demo")
    with pytest.raises(LoratuiError, match="not a folder"):
        delete_adapter(runs / "smollm2-demo" / "adapter" / "adapter_config.json")
    with pytest.raises(LoratuiError, match="not a folder"):
        delete_adapter(tmp_path / "nope")
    outer = tmp_path / "outer"
    write_adapter(outer)
    write_adapter(outer / "inner")
    with pytest.raises(LoratuiError, match="other adapters"):
        delete_adapter(outer)
    link = tmp_path / "link"
    link.symlink_to(runs / "smollm2-demo" / "adapter")
    with pytest.raises(LoratuiError, match="symbolic link"):
        delete_adapter(link)
    assert (runs / "smollm2-demo" / "config.yaml").is_file()
    assert (runs / "smollm2-demo" / "adapter" / "adapter_config.json").is_file()


def test_base_model_is_shown_as_the_user_named_it(tmp_path):
    """An adapter saved by a run names its base by the alias/id from the config, not peft's cache path."""
    import json

    from loratui.core.adapters import find_adapters

    run = tmp_path / "runs" / "r1"
    adapter = run / "adapter"
    ckpt = run / "checkpoints" / "checkpoint-5"
    for folder in (adapter, ckpt):
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps(
            {"base_model_name_or_path": "/home/u/.cache/loratui/models/x", "r": 8, "lora_alpha": 16,
             "peft_type": "LORA", "task_type": "CAUSAL_LM", "target_modules": ["q_proj"]}))
    (adapter / "loratui.json").write_text(json.dumps({"base_model": "smollm2-135m-instruct"}))
    (run / "config.yaml").write_text("model:\n  name: smollm2-135m-instruct\n")
    (run / "status.json").write_text('{"state": "finished"}')
    found = {a.path.name: a.base_model for a in find_adapters([tmp_path / "runs"])}
    assert found == {"adapter": "smollm2-135m-instruct", "checkpoint-5": "smollm2-135m-instruct"}



def test_each_run_adapter_shows_its_step_and_the_folds_figures_there(tmp_path):
    """Which checkpoint is which: the step each holds, the train loss logged there, the evaluation at that step; the
    final adapter's are the numbers the Monitor and the Runs list show (the same fold)."""
    from loratui.core.adapters import adapter_figures
    from loratui.core.runs import RunDir, summarize

    runs = copy_runs(tmp_path)
    adapters = find_adapters([runs])
    figures = {a.name: adapter_figures(adapters)[str(a.path)] for a in adapters}
    assert {n: f.step for n, f in figures.items()} == {
        "smollm2-demo": 200, "smollm2-demo/checkpoint-200": 200, "smollm2-demo/checkpoint-100": 100,
        "smollm2-stopped": 120, "smollm2-stopped/checkpoint-100": 100}
    ck = figures["smollm2-demo/checkpoint-100"]
    assert (ck.loss, ck.loss_step, ck.eval_loss) == (1.3605, 100, 1.4617)  # the recorded step and eval at 100
    demo = summarize(RunDir(runs / "smollm2-demo"))
    final = figures["smollm2-demo"]
    assert (final.loss, final.eval_loss) == (demo.loss, demo.eval_loss) == (0.9475, 1.0324)
    stopped = figures["smollm2-stopped"]  # stopped at 120, evaluated every 25 steps: no evaluation of those weights
    assert (stopped.loss, stopped.eval_loss) == (summarize(RunDir(runs / "smollm2-stopped")).loss, None)


def test_a_resumed_run_forgets_the_figures_of_the_steps_it_trains_again():
    from loratui.core.fold import RunFold

    fold = RunFold().add_all([
        {"kind": "started", "time": 1.0, "max_steps": 30},
        {"kind": "step", "time": 2.0, "step": 10, "loss": 2.0},
        {"kind": "eval", "time": 2.5, "step": 10, "eval_loss": 2.5},
        {"kind": "step", "time": 3.0, "step": 20, "loss": 1.5},
        {"kind": "eval", "time": 3.5, "step": 20, "eval_loss": 2.2},
        {"kind": "resumed", "time": 9.0, "step": 10},  # from checkpoint-10: steps 11-20 are trained again
        {"kind": "step", "time": 10.0, "step": 15, "loss": 1.8},
        {"kind": "eval", "time": 10.5, "step": 30, "eval_loss": 2.1, "final": True, "examples": 200},
        {"kind": "finished", "time": 11.0, "step": 30, "adapter": "adapter"},
    ])
    h = fold.history
    assert (h.at(20).loss, h.at(20).loss_step, h.at(20).eval_loss) == (1.8, 15, None)
    assert (h.at(10).loss, h.at(10).eval_loss) == (2.0, 2.5)
    assert h.adapter_step == 30 and h.at(30).eval_final and h.at(30).eval_examples == 200
    # each logged loss is the mean of the steps since the one before: 10 steps at 2.0, 5 at 1.8 (the Trainer's own
    # train_loss; the plain mean of the points, 1.9, disagreed with it: a QA walk read 0.170 against 0.137)
    assert fold.summary().train_loss == pytest.approx((2.0 * 10 + 1.8 * 5) / 15)
