"""Target-module presets from the LoRA literature, and built-in model aliases. Light module."""

from __future__ import annotations

PRESETS: dict[str, list[str]] = {
    "llama-attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "llama-all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "minimal-qv": ["q_proj", "v_proj"],
    "bert-qv": ["query", "value"],
    "bert-all": ["query", "key", "value", "dense"],
    "distilbert-qv": ["q_lin", "v_lin"],
    "gpt2": ["c_attn", "c_proj"],
    "all-linear": ["all-linear"],
}

PRESET_NOTES: dict[str, str] = {
    "llama-attn": "Llama/Mistral/Qwen: all attention projections",
    "llama-all": "Llama/Mistral/Qwen: attention + MLP (QLoRA paper)",
    "minimal-qv": "query and value only: fewest parameters, often enough",
    "bert-qv": "BERT/RoBERTa/MiniLM: query and value (classic PEFT recipe)",
    "bert-all": "BERT/RoBERTa: all attention projections and dense layers",
    "distilbert-qv": "DistilBERT: q_lin and v_lin",
    "gpt2": "GPT-2: fused QKV (c_attn) and projections (c_proj, Conv1D)",
    "all-linear": "every linear layer except the output head",
}

#: default preset per transformers model_type
MODEL_TYPE_PRESET: dict[str, str] = {
    "llama": "llama-attn",
    "mistral": "llama-attn",
    "mixtral": "llama-attn",
    "qwen2": "llama-attn",
    "qwen3": "llama-attn",
    "gemma": "llama-attn",
    "gemma2": "llama-attn",
    "phi3": "all-linear",
    "bert": "bert-qv",
    "roberta": "bert-qv",
    "xlm-roberta": "bert-qv",
    "distilbert": "distilbert-qv",
    "gpt2": "gpt2",
}


def preset_for_model_type(model_type: str | None) -> str:
    return MODEL_TYPE_PRESET.get(model_type or "", "all-linear")


def preset_modules(name: str) -> list[str] | str:
    if name not in PRESETS:
        from loratui.core.errors import ConfigError

        raise ConfigError(f"unknown preset '{name}'", field="lora.preset", hint="choose one of " + ", ".join(PRESETS))
    mods = PRESETS[name]
    return "all-linear" if mods == ["all-linear"] else list(mods)
