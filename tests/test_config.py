"""Config: YAML round trip, short saved files, one-line errors naming field and fix."""

from pathlib import Path

import pytest
import yaml

from loratui.core.config import RunConfig, config_from_dict, load_config
from loratui.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_every_sample_config_loads():
    files = sorted((REPO / "sample_configs").glob("*.yaml"))
    assert {f.stem for f in files} >= {"smollm2-demo", "minilm-sentiment", "llama3-8b-qlora", "mistral-7b-qlora",
                                       "gpt2-qlora", "smollm2-dpo"}
    from loratui.core.study import is_study_file, load_study

    for f in files:
        if is_study_file(f):  # a study: a base config and a grid, each expanded run a valid config
            study = load_study(f)
            assert study.runs and study.base.model.name
            continue
        cfg = load_config(f)
        assert cfg.model.name


def test_yaml_round_trip_keeps_values_and_order(tmp_path):
    cfg = RunConfig()
    cfg.lora.r = 16
    cfg.lora.target_modules = ["q_proj", "v_proj"]
    cfg.train.lr = 1e-4
    cfg.model.name = "gpt2"
    path = cfg.save(tmp_path / "c.yaml")
    text = path.read_text()
    # defaults omitted, section order kept (model before lora before train)
    assert "dropout" not in text and "batch_size" not in text
    assert text.index("model:") < text.index("lora:") < text.index("train:")
    again = load_config(path)
    assert again == cfg


def test_full_save_has_every_field(tmp_path):
    path = RunConfig().save(tmp_path / "full.yaml", full=True)
    data = yaml.safe_load(path.read_text())
    assert data["lora"]["r"] == 8 and data["train"]["batch_size"] == 8


@pytest.mark.parametrize("data, expected", [
    ({"lora": {"r": 0}}, "lora.r: must be a positive whole number"),
    ({"lora": {"alpha": 0}}, "lora.alpha: must be positive"),
    ({"lora": {"dropout": 1.0}}, "lora.dropout: must be in [0, 1)"),
    ({"lora": {"dropout": -0.1}}, "lora.dropout: must be in [0, 1)"),
    ({"lora": {"rank": 8}}, "lora.rank: unknown key 'rank' (did you mean 'r'?)"),
    ({"lora": {"colour": 8}}, "lora.colour: unknown key 'colour' (allowed here: r, alpha"),
    ({"train": {"learning_rate": 1e-4}}, "train.learning_rate: unknown key 'learning_rate' (did you mean 'lr'?)"),
    ({"train": {"max_step": 3}}, "train.max_step: unknown key 'max_step' (did you mean 'max_steps'?)"),
    ({"lora": {"lr": 1e-4}}, "lora.lr: unknown key 'lr' (it belongs under train:)"),
    ({"learning_rate": 1e-4}, "learning_rate: unknown key 'learning_rate' (did you mean train.lr?)"),
    ({"trian": {}}, "trian: unknown key 'trian' (did you mean 'train'?)"),
    ({"method": {"kind": "qlora4"}}, "method.kind: 'qlora4' is not allowed (choose one of 'lora', 'qlora'"),
    ({"train": {"batch_size": 0}}, "train.batch_size:"),
    ({"model": {"task": "seq-cls"}}, "data.format must be classification"),
])
def test_bad_values_name_the_field(data, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    bad.write_text("model:\n  name: smollm2-135m-instruct\ntrain\n  lr: 0.001\n")  # the colon left out on line 3
    with pytest.raises(ConfigError, match=r"YAML at line 3 \(read up to line 4\): could not find expected ':'"):
        load_config(bad)
    bad.write_text("model: [a\n  name: x\n")  # the parser gives up on line 2, in a list begun on line 1 (QA walk)
    with pytest.raises(ConfigError, match=r"at line 1 \(read up to line 2\): expected ',' or '\]'"):
        load_config(bad)
    bad.write_text("model:\n\tname: x\n")
    with pytest.raises(ConfigError, match=r"at line 2: found character '\\t'.*\(YAML indents with spaces, not tabs\)"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_relative_data_paths_resolve_against_the_config(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "hi"}\n')
    (tmp_path / "c.yaml").write_text("data:\n  source: data/train.jsonl\n  format: text\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.data.source == str((tmp_path / "data" / "train.jsonl").resolve())


def test_target_modules_accepts_comma_string():
    cfg = config_from_dict({"lora": {"target_modules": "q_proj, v_proj"}})
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert config_from_dict({"lora": {"target_modules": "all-linear"}}).lora.target_modules == "all-linear"


def test_a_config_with_several_mistakes_names_every_field_in_its_one_line():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"lora": {"r": 0}, "train": {"lr": -0.001, "batch_size": 0}})
    line = str(err.value)
    assert line.startswith("lora.r: must be a positive whole number") and "\n" not in line
    assert line.endswith("; also to fix: train.batch_size, train.lr")
