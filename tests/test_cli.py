"""The headless commands users script against."""

from __future__ import annotations

import json

import yaml

from loratui.cli import main


def test_presets_lists_presets_and_builtin_models(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "llama-all" in out and "gate_proj" in out and "c_attn" in out
    assert "smollm2-135m-instruct" in out and "minilm-l6-v2" in out


def test_layers_and_estimate(tmp_path, tiny_llama, capsys):
    assert main(["layers", str(tiny_llama), "--names"]) == 0
    assert capsys.readouterr().out.split() == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                              "v_proj"]
    assert main(["layers", str(tiny_llama)]) == 0
    table = capsys.readouterr().out
    assert "as causal-lm" in table
    assert next(line for line in table.splitlines() if line.startswith("k_proj")).split()[1:5] == [
        "2", "64", "->", "32"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": str(tiny_llama)}, "lora": {"r": 4, "preset": "minimal-qv"}}))
    assert main(["estimate", str(cfg)]) == 0
    out = capsys.readouterr().out
    # 2 layers x (q: 4*(64+64) + v: 4*(64+32))
    assert out.startswith("trainable params: 1,792 || all params:")
    assert "full fine-tuning" in out
    # QLoRA runs on an NVIDIA GPU only: no host-memory figure for it on a CPU, as Setup leaves it out
    assert "QLoRA 4-bit" not in out and "host memory; QLoRA needs an NVIDIA GPU" in out
    cfg.write_text(yaml.safe_dump({"model": {"name": str(tiny_llama)}, "method": {"kind": "qlora"}}))
    assert main(["estimate", str(cfg)]) == 0  # the plan of a QLoRA run, for the GPU box it is for
    out = capsys.readouterr().out
    assert "this config (qlora)" in out and "host memory; QLoRA needs an NVIDIA GPU" in out


def test_runs_lists_states(tmp_path, capsys):
    from loratui.core.runs import RunDir

    run = RunDir(tmp_path / "a")
    run.path.mkdir()
    run.config_path.write_text("model: {name: gpt2}\n")
    run.events_path.write_text('{"kind": "started", "model": "gpt2", "method": "lora", "max_steps": 10}\n'
                               '{"kind": "step", "step": 4}\n{"kind": "eval", "eval_loss": 1.5}\n{"kind": "stopped"')
    run.write_status(state="stopped")
    assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert {k: row[k] for k in ("name", "state", "model", "method", "step", "max_steps", "best_eval_loss")} == {"name": "a", "state": "stopped", "model": "gpt2", "method": "lora", "step": 4, "max_steps": 10,
                   "best_eval_loss": 1.5}
    # the folder given before the command is the one read (the command's own default used to overwrite it)
    assert main(["--runs-dir", str(tmp_path), "runs", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["a"]


def test_stop_of_a_run_that_is_not_running(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("{}\n")
    assert main(["stop", str(tmp_path)]) == 2
    assert "is not running" in capsys.readouterr().err


def test_stop_and_resume_take_a_run_name_from_the_listing(tmp_path, capsys, monkeypatch):
    """`loratui runs` lists names; `loratui stop NAME` and `train --resume NAME` find them in the runs folder, and
    a name that is nowhere says where it looked (it used to say "not running (state: created)")."""
    from loratui.core.runs import RunDir

    monkeypatch.chdir(tmp_path)
    run = RunDir(tmp_path / "runs" / "mine")
    run.path.mkdir(parents=True)
    run.config_path.write_text("{}\n")
    run.write_status(state="finished")
    assert main(["stop", "mine"]) == 2
    assert "mine is not running (state: finished)" in capsys.readouterr().err
    assert main(["train", "--resume", "mine"]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["stop", "nothere"]) == 2
    err = capsys.readouterr().err
    assert "no run folder at nothere or runs/nothere" in err and "loratui runs" in err
    other = tmp_path / "elsewhere"
    assert main(["stop", "mine", "--runs-dir", str(other)]) == 2
    assert f"{other}/mine" in capsys.readouterr().err


def test_resume_needs_a_stopped_run(tmp_path, capsys):
    from loratui.core.runs import RunDir

    run = RunDir(tmp_path / "done")
    run.path.mkdir()
    run.config_path.write_text("{}\n")
    run.write_status(state="finished")
    assert main(["train", "--resume", str(run.path)]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "give a config file or --resume" in capsys.readouterr().err


def test_runs_fits_the_terminal_width(tmp_path, capsys, monkeypatch):
    """`loratui runs` in an 80-column SSH terminal: every row fits (the started column goes, long names are cut
    with an ellipsis); 120 columns keep the started column; piped output (no terminal) stays whole."""
    from loratui.core.runs import RunDir

    for name in ("smollm2-135m-instruct-lora-20261204-214941", "b"):
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        run.config_path.write_text("model: {name: gpt2}\n")
        run.events_path.write_text('{"kind": "started", "model": "gpt2", "method": "lora", "max_steps": 10}\n')
        run.write_status(state="stopped")

    def rows(columns):
        if columns:
            monkeypatch.setenv("COLUMNS", str(columns))
        else:
            monkeypatch.delenv("COLUMNS", raising=False)
        assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
        return capsys.readouterr().out.splitlines()

    narrow = rows(80)
    assert len(narrow) == 3 and all(len(line) <= 80 for line in narrow), narrow
    assert "started" not in narrow[0] and any(line.startswith("smollm2-135m-") and "…" in line for line in narrow)
    wide = rows(120)
    assert "started" in wide[0] and all(len(line) <= 120 for line in wide)
    assert any(line.startswith("smollm2-135m-instruct-lora-20261204-214941 ") for line in rows(None))


def test_runs_says_when_the_runs_folder_does_not_exist(tmp_path, capsys):
    assert main(["runs", "--runs-dir", str(tmp_path / "typo")]) == 0
    assert capsys.readouterr().out.strip() == (f"no runs: {tmp_path / 'typo'} does not exist (--runs-dir, or "
                                               "$LORATUI_RUNS_DIR, names the runs folder)")
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no runs in {tmp_path}"


def test_a_listing_piped_into_a_reader_that_leaves_ends_without_a_traceback(tmp_path):
    """`loratui runs | head -2`: the reader closes the pipe; the listing stops quietly, as a shell command does."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "loratui", "runs", "--runs-dir", str(tmp_path)], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 141


def test_a_mistyped_command_is_answered_with_the_command_meant(capsys):
    assert main(["trian", "x.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown command 'trian' (did you mean 'train'?)"
    assert main(["--runs-dir", "runs", "frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate' (commands: train, runs, stop," in err
    assert "engine" not in err and "queue-runner" not in err  # the internal commands stay out of it
    assert main(["my.yaml"]) == 2  # a config where the command goes: both ways to use it
    assert capsys.readouterr().err.strip() == ("error: unknown command 'my.yaml' (to open a config in the app: "
                                               "loratui --config my.yaml; to train it: loratui train my.yaml)")


def test_merge_export_and_generate_take_a_run_name_and_runs_dir(tmp_path, monkeypatch, capsys):
    """`loratui export NAME OUT --runs-dir DIR` (a QA walk got 'unrecognized arguments'): the name is the run's
    adapter in that runs folder; a folder given as a path is taken as it is."""
    (tmp_path / "runs" / "walk-a" / "adapter").mkdir(parents=True)
    seen = {}
    from loratui.train import export, generate, merge

    def fake(name):
        def record(source, *a, **k):
            seen[name] = source
            if name != "generate":
                raise ZeroDivisionError  # the real work stops here
            return source
        return record

    monkeypatch.setattr(export, "export_gguf", fake("export"))
    monkeypatch.setattr(merge, "merge_adapter", fake("merge"))
    monkeypatch.setattr(generate, "generate", fake("generate"))
    runs = str(tmp_path / "runs")
    for argv in (["export", "walk-a", str(tmp_path / "out"), "--runs-dir", runs],
                 ["merge", "walk-a", str(tmp_path / "merged"), "--runs-dir", runs],
                 ["--runs-dir", runs, "generate", "walk-a", "hello"]):
        try:
            main(argv)
        except ZeroDivisionError:
            pass
    adapter = str(tmp_path / "runs" / "walk-a" / "adapter")
    assert seen == {"export": adapter, "merge": adapter, "generate": adapter}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "walk-a").mkdir()  # a folder of that name here is what the user meant
    main(["generate", "walk-a", "hi", "--runs-dir", runs])
    assert seen["generate"] == "walk-a"


def test_the_app_asked_to_open_a_config_it_cannot_read_says_why_and_does_not_open(tmp_path, capsys, monkeypatch):
    """`loratui --config bad.yaml` opened a form of defaults behind an error (a QA walk took it for the file's). A
    file that is no config is one line and no app; one with mistakes in its keys opens with the file's values, the
    mistakes named (tests/test_app_setup_draft.py)."""
    from loratui.ui.app import LoratuiApp

    opened = []
    monkeypatch.setattr(LoratuiApp, "run", lambda self: opened.append(self))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2]\n")
    assert main(["--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == ("error: train: Input should be a valid dictionary or instance of "
                                               "TrainSection")
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err and not opened
    bad.write_text("train:\n  learning_rate: 0.001\n  max_steps: 7\n")
    assert main(["--config", str(bad)]) == 0
    (app,) = opened
    assert app.initial_config.train.max_steps == 7 and app.initial_draft.unknown == ["train.learning_rate"]


def test_a_merge_whose_check_fails_exits_non_zero(tmp_path, monkeypatch, capsys):
    """'✖ merged model differs from the adapter more than expected' came with exit 0 (a QA walk): scripts went on."""
    from loratui.core.merge_check import judge
    from loratui.train import merge

    def merged(adapter, output, **kw):
        return {"output": output, "size_bytes": 2**20, "dtype": "bf16", "seconds": 1.0,
                "check": judge(0.0309, 30, 32, "bf16")}

    monkeypatch.setattr(merge, "merge_adapter", merged)
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "m"), "--dtype", "bf16"]) == 1
    out, err = capsys.readouterr()
    assert "✖ merged model differs from the adapter more than expected" in out
    assert "⚠ merged, but the check failed" in out
    assert "merge again in fp32 or fp16 (fp32 is exact)" in err and "is kept in" in err


def test_every_unknown_key_in_a_bad_config_says_what_it_likely_meant(tmp_path, capsys):
    """The walk: `loratui train bad.yaml` told 'did you mean' for the first unknown key only; the others in the
    'also to fix' list were bare paths, so each typo was found by running again."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"name": "smollm2-135m-instruct"},
                                   "lora": {"rr": 8, "alpah": 16, "dropuot": 0.05},
                                   "train": {"learning_rate": 0.001, "batch_sise": 8, "r": 8}}, sort_keys=False))
    for command in (["train", str(bad)], ["estimate", str(bad)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "lora.rr: unknown key 'rr' (allowed here: r, alpha," in err, err
        also = err.partition("also to fix: ")[2]
        for part in ("lora.alpah (did you mean 'alpha'?)", "lora.dropuot (did you mean 'dropout'?)",
                     "train.learning_rate (did you mean 'lr'?)", "train.batch_sise (did you mean 'batch_size'?)",
                     "train.r (it belongs under lora:)"):
            assert part in also, (part, err)


def test_a_value_out_of_bounds_says_the_bound_and_the_default_in_plain_words(tmp_path, capsys):
    """QA walk: `train.epochs: 0` read 'Input should be greater than 0, got 0' (pydantic's words, no value to go
    back to), where the form says 'must be more than 0 (the default is 3)'."""
    from loratui.cli import main

    bad = tmp_path / "e0.yaml"
    bad.write_text("model:\n  name: smollm2-135m-instruct\ntrain:\n  epochs: 0\n  batch_size: 0\n")
    assert main(["estimate", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "train.epochs: must be more than 0, got 0 (the default is 3)" in err and "train.batch_size" in err
    bad.write_text("model:\n  name: smollm2-135m-instruct\ntrain:\n  batch_size: 0\n")
    assert main(["estimate", str(bad)]) != 0
    assert "train.batch_size: must be at least 1, got 0 (the default is 8)" in capsys.readouterr().err
