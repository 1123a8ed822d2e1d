"""Issue 15, round 2 of hostile input: a NUL byte in a path, a learning rate of 1e30, control characters in run
names and in what the listing shows, 10,000 unknown target modules. Each is one short line, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from loratui.cli import main as cli_main
from loratui.core.config import RunConfig

ESC = "\x1b"


def _config(tmp_path: Path, **sections) -> Path:
    data = {"model": {"name": "smollm2-135m-instruct"}, "output": {"runs_dir": str(tmp_path / "runs")}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_nul_byte_in_a_path_is_one_line(tmp_path, capsys):
    for key in ("source", "validation_file"):
        cfg = _config(tmp_path, data={key: "contacts\0.jsonl"})
        for cmd in (["estimate", str(cfg)], ["train", str(cfg)]):
            assert cli_main(cmd) == 2
            assert f"data.{key}: contains a NUL byte" in _one_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_a_learning_rate_far_out_of_range_is_refused_with_the_range(tmp_path, capsys):
    assert cli_main(["train", str(_config(tmp_path, train={"lr": 1e30}))]) == 2
    err = _one_line(capsys)
    assert "train.lr: 1e+30 is far above" in err and "1e-4 to 3e-4" in err
    assert RunConfig.model_validate({"train": {"lr": 0.5}}).train.lr == 0.5  # high but possible stays allowed


def test_run_names_are_printable_and_single_line(tmp_path, capsys):
    cfg = _config(tmp_path)
    for name in ("ok\x1b[2J\x1b]0;pwned\x07", "two\nlines", "tab\there"):
        assert cli_main(["train", str(cfg), "--name", name]) == 2
        err = _one_line(capsys)
        assert "is not a run name: names are printable and on one line" in err and ESC not in err
    assert not (tmp_path / "runs").exists()


def test_the_listing_escapes_what_it_did_not_write(tmp_path, capsys):
    """A folder made by hand (or an older loratui) with escapes in its name, and a failed event whose message holds a
    newline and a terminal title sequence: `loratui runs` shows them escaped on their own lines."""
    runs = tmp_path / "runs"
    bad = runs / "evil\x1b[2Jname"
    bad.mkdir(parents=True)
    RunConfig().save(bad / "config.yaml")
    (bad / "events.jsonl").write_text(
        json.dumps({"kind": "started", "time": 1.0, "max_steps": 4}) + "\n"
        + json.dumps({"kind": "failed", "time": 2.0, "step": 1, "message": "boom\nforged-run running 4/4\x1b]0;t\x07"})
        + "\n")
    (bad / "status.json").write_text(json.dumps({"state": "failed", "error": "boom\nforged\x1b]0;t\x07"}))
    assert cli_main(["runs", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert ESC not in out and "\x07" not in out
    assert "evil\\x1b[2Jname" in out
    assert not any(line.startswith("forged") for line in out.splitlines())  # no forged line of the listing


def test_ten_thousand_unknown_targets_make_a_short_line(tmp_path, capsys, tiny_llama):
    cfg = _config(tmp_path, model={"name": str(tiny_llama)},
                  lora={"target_modules": [f"nope_{i}" for i in range(10_000)]})
    assert cli_main(["estimate", str(cfg)]) == 2
    err = _one_line(capsys)
    assert len(err) < 600 and "and 9,995 more not in this model" in err


def test_a_read_only_runs_folder_is_one_line(tmp_path, capsys):
    """Item 3: a read-only runs folder (a read-only bind mount: root ignores permission bits) for a new run, a resume
    and a detached resume: one line each, and nothing in the folder changes."""
    import subprocess

    import pytest

    from fixtures import copy_runs

    src = copy_runs(tmp_path / "src", ["smollm2-stopped"])
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        before = sorted((p.name, p.stat().st_mtime) for p in (ro / "smollm2-stopped").iterdir())
        for cmd in (["train", "--resume", "smollm2-stopped", "--runs-dir", str(ro)],
                    ["train", "--resume", "smollm2-stopped", "--runs-dir", str(ro), "--detach"]):
            assert cli_main(cmd) == 2
            err = _one_line(capsys)
            assert "cannot lock the run smollm2-stopped" in err and "Read-only file system" in err
        cfg = _config(tmp_path, data={"source": "sample:contacts-json.jsonl", "format": "alpaca"})
        assert cli_main(["train", str(cfg), "--runs-dir", str(ro), "--name", "fresh"]) == 2
        err = _one_line(capsys)
        assert "cannot write the run folder" in err and "Read-only file system" in err
        assert sorted((p.name, p.stat().st_mtime) for p in (ro / "smollm2-stopped").iterdir()) == before
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_files_without_rows_and_single_label_data_are_one_line(tmp_path, capsys):
    """Item 13: a JSON lines file of blank lines, a CSV header alone: 'no rows in FILE'; classification data with one
    label: said so, before any training."""
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n\n")
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    for f in (blank, header):
        cfg = _config(tmp_path, data={"source": str(f), "format": "text"})
        assert cli_main(["train", str(cfg)]) == 2
        assert f"data.source: no rows in {f.name}" in _one_line(capsys)
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"review {i},pos\n" for i in range(40)))
    cfg = _config(tmp_path, model={"name": "minilm-l6-v2", "task": "seq-cls", "num_labels": 2},
                  data={"source": str(one), "format": "classification"})
    assert cli_main(["train", str(cfg)]) == 2
    err = _one_line(capsys)
    assert "data.label_column" in err and "holds only 'pos'" in err and "at least two labels" in err


def test_a_hand_edited_adapter_config_is_not_incomplete(tmp_path):
    """Item 6: a one-byte edit of adapter_config.json (a trailing '/' on the base path) leaves the adapter whole;
    a truncated weights file is still incomplete."""
    from loratui.core import checkpoints as ck

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.zeros(64, 64)}, str(folder / "adapter_model.safetensors"))
    ck.write_marker(folder)
    cfg = folder / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('/models/base"', '/models/base/"'))
    assert ck.adapter_problem(folder) is None
    cfg.write_text("{not json")
    assert "adapter_config.json is unreadable" in ck.adapter_problem(folder)
    cfg.write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    w = folder / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    assert "adapter_model.safetensors" in ck.adapter_problem(folder)


def test_files_others_can_read_under_umask_022(tmp_path, tiny_llama, monkeypatch):
    """Issue 19 item 3: under umask 022 the weights, checkpoints, status.json and a merged model are 0644 (folders
    0755): a teammate or a serving process of another user can read them."""
    import os
    import stat

    from loratui.core import fileio, runs
    from loratui.train.engine import Engine
    from loratui.train.merge import merge_adapter

    old = os.umask(0o022)
    monkeypatch.setattr(fileio, "_UMASK", 0o022)
    try:
        data = {"model": {"name": str(tiny_llama)}, "lora": {"r": 4},
                "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 24,
                         "validation_fraction": 0.0, "max_length": 64},
                "train": {"max_steps": 2, "batch_size": 2, "save_steps": 2},
                "output": {"runs_dir": str(tmp_path / "runs"), "name": "r"}}
        run = runs.create_run(RunConfig.model_validate(data))
        assert Engine(run, echo=lambda line: None).run() == 0
        merge_adapter(run.adapter_dir, tmp_path / "merged", dtype="fp32")
    finally:
        os.umask(old)
    files = [run.status_path, run.adapter_dir / "adapter_model.safetensors",
             run.checkpoints_dir / "checkpoint-2" / "adapter_model.safetensors", tmp_path / "merged" / "model.safetensors"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, (f, oct(f.stat().st_mode))
    for d in (run.adapter_dir, run.checkpoints_dir / "checkpoint-2", tmp_path / "merged"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, (d, oct(d.stat().st_mode))
