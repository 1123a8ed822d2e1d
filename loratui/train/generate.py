"""Try a model or an adapter on prompts: greedy decoding with the tokenizer's chat template when it has one, or, for
a classification model or adapter, the predicted label with its probability."""

from __future__ import annotations

from pathlib import Path


def load_for_inference(model_ref: str, *, allow_pickle: bool = False):
    """(model, tokenizer) from an adapter folder, a model folder, an alias or a hub id. Pickle (.bin) weights load
    only with ``allow_pickle``; an incomplete adapter or a refused pickle is a one-line ModelError."""
    from transformers import AutoTokenizer

    from loratui.train import models
    from loratui.core.config import ModelSection

    path = Path(model_ref).expanduser()
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        from loratui.train.merge import adapter_base, adapter_tokenizer, check_adapter

        check_adapter(path, allow_pickle=allow_pickle)
        section, info = adapter_base(path)
        section.allow_pickle = allow_pickle
        resolved = models.resolve_model(section)
        base = _load(models, section.task, resolved, allow_pickle, **_label_kwargs(section, info))
        try:
            model = PeftModel.from_pretrained(base, str(path))
        except Exception as err:
            raise _adapter_load_error(models, path, err) from None
        tokenizer = adapter_tokenizer(path, resolved)
    else:
        resolved = models.resolve_model(ModelSection(name=model_ref))
        model = _load(models, _folder_task(resolved.path), resolved, allow_pickle)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **resolved.kwargs())
    model.eval()
    return model, tokenizer


def _label_kwargs(section, info: dict) -> dict:
    """A classifier's head size and label names, as its run saved them (loratui.json beside the adapter)."""
    if section.task != "seq-cls":
        return {}
    kwargs: dict = {"num_labels": section.num_labels}
    labels = info.get("labels")
    if labels and len(labels) == section.num_labels:
        kwargs.update(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    return kwargs


def _folder_task(path: str) -> str:
    """'seq-cls' for a saved classifier (a merged one included), else 'causal-lm'."""
    import json

    try:
        archs = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return "causal-lm"
    return "seq-cls" if any(str(a).endswith("ForSequenceClassification") for a in archs) else "causal-lm"


def is_classifier(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


def _load(models, task: str, resolved, allow_pickle: bool, **kwargs):
    if resolved.local:
        models.check_pickle(resolved.path, allow_pickle)
    extra = {} if allow_pickle or resolved.gguf_file else {"use_safetensors": True}
    extra.update(kwargs)
    try:
        return models.auto_class(task).from_pretrained(resolved.path, **resolved.kwargs(), **extra)
    except Exception as err:
        if models.is_unsafe_pickle_error(err):
            raise models.unsafe_pickle_error(resolved.path) from None
        raise


def _adapter_load_error(models, path: Path, err: Exception):
    from loratui.core.errors import ModelError

    if models.is_unsafe_pickle_error(err):
        return models.unsafe_pickle_error(path, field="adapter")
    text = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return ModelError(f"cannot load the adapter in {path}: {text}", field="adapter",
                      hint="the adapter may be incomplete or damaged; re-save it from its run's checkpoint")


def render_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    from loratui.train.data import alpaca_prompt  # the same prompt the engine trained on without a chat template

    return alpaca_prompt(prompt, None)


def complete(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, system: str | None = None) -> list[str]:
    import torch

    outs = []
    for prompt in prompts:
        text = render_prompt(tokenizer, prompt, system)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        outs.append(tokenizer.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outs


def classify(model, tokenizer, texts: list[str]) -> list[list[tuple[str, float]]]:
    """Per text: (label, probability) for every label, most likely first."""
    import torch

    id2label = getattr(model.config, "id2label", None) or {}
    out = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", truncation=True)
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits.float()[0], dim=-1).tolist()
        ranked = sorted(((str(id2label.get(i, f"LABEL_{i}")), p) for i, p in enumerate(probs)),
                        key=lambda lp: -lp[1])
        out.append(ranked)
    return out


def format_prediction(ranked: list[tuple[str, float]]) -> str:
    """'positive (93.1%)  ·  negative 6.9%'"""
    (label, p), rest = ranked[0], ranked[1:]
    text = f"{label} ({p:.1%})"
    if rest:
        text += "  ·  " + ", ".join(f"{name} {q:.1%}" for name, q in rest)
    return text


def generate(model_ref: str, prompt: str, max_new_tokens: int = 64, *, allow_pickle: bool = False) -> str:
    """The model's answer to ``prompt``; for a classifier, its predicted label and probability."""
    model, tokenizer = load_for_inference(model_ref, allow_pickle=allow_pickle)
    if is_classifier(model):
        return format_prediction(classify(model, tokenizer, [prompt])[0])
    return complete(model, tokenizer, [prompt], max_new_tokens)[0]
