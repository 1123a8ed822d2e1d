"""Issue 9 defect 10: the method shorthand, a --help without internal commands, and a saved Setup YAML that reads
on its own."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from loratui.core.config import RunConfig, load_config


def test_method_written_as_a_word(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("model:\n  name: smollm2-135m-instruct\nmethod: qlora\n")
    assert load_config(path).method.kind == "qlora"
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: qlorra\n")
    with pytest.raises(Exception, match="method.kind.*'lora', 'qlora'"):
        load_config(bad)


def test_help_lists_no_internal_commands():
    out = subprocess.run([sys.executable, "-m", "loratui", "--help"], capture_output=True, text=True).stdout
    assert "SUPPRESS" not in out and "engine" not in out and "queue-runner" not in out
    assert "train" in out and "merge" in out


def test_saved_yaml_names_model_and_data_and_keeps_the_preset_alone(tmp_path):
    cfg = RunConfig.model_validate({"lora": {"preset": "minimal-qv", "target_modules": ["q_proj", "v_proj"]}})
    data = yaml.safe_load(cfg.to_yaml())
    assert data["model"]["name"] == cfg.model.name and data["data"]["source"] == cfg.data.source
    assert data["lora"] == {"preset": "minimal-qv"}
    assert list(data) == ["model", "lora", "data"]
    assert RunConfig.model_validate(data) == cfg.model_copy(update={"lora": cfg.lora.model_copy(
        update={"target_modules": None})})


def test_layers_of_an_encoder_are_its_classifier_targets_with_shapes(tiny_bert, capsys):
    """Issue 9 defect 12: `layers` on a classification base listed the masked-LM `decoder` and no shapes."""
    from loratui.cli import main

    assert main(["layers", str(tiny_bert)]) == 0
    out = capsys.readouterr().out
    assert "as seq-cls" in out and "decoder" not in out
    query = next(line for line in out.splitlines() if line.startswith("query"))
    assert query.split()[1:5] == ["2", "64", "->", "64"] and "8,320" in query  # 2 layers of 64x64 + 64 bias
    assert main(["layers", str(tiny_bert), "--names"]) == 0
    assert capsys.readouterr().out.split() == ["dense", "key", "query", "value"]
