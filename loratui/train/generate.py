"""Try a model or an adapter on prompts (greedy decoding, the tokenizer's chat template when it has one)."""

from __future__ import annotations

from pathlib import Path


def load_for_inference(model_ref: str):
    """(model, tokenizer) from an adapter folder, a model folder, an alias or a hub id."""
    from transformers import AutoTokenizer

    from loratui.train import models
    from loratui.core.config import ModelSection

    path = Path(model_ref).expanduser()
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        from loratui.train.merge import adapter_base, adapter_tokenizer

        section, _ = adapter_base(path)
        resolved = models.resolve_model(section)
        base = models.auto_class(section.task).from_pretrained(resolved.path, **resolved.kwargs())
        model = PeftModel.from_pretrained(base, str(path))
        tokenizer = adapter_tokenizer(path, resolved)
    else:
        resolved = models.resolve_model(ModelSection(name=model_ref))
        model = models.auto_class("causal-lm").from_pretrained(resolved.path, **resolved.kwargs())
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **resolved.kwargs())
    model.eval()
    return model, tokenizer


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


def generate(model_ref: str, prompt: str, max_new_tokens: int = 64) -> str:
    model, tokenizer = load_for_inference(model_ref)
    return complete(model, tokenizer, [prompt], max_new_tokens)[0]
