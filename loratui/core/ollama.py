"""A model's chat template (Jinja, as Hugging Face tokenizers carry it) in Ollama's Go template language.

Ollama does not run Jinja: a Modelfile needs a ``TEMPLATE`` in Go's text/template syntax and the ``stop`` strings
that end a turn. No general translation exists, so the known families are written out here, each twice: the Go
template the Modelfile gets, and the same layout in Python. The exporter renders a few conversations with the
model's own Jinja template and with the Python twin; only when they agree character for character is the family
taken (``loratui.train.export``). A template no family reproduces is said plainly, never guessed.
Light module: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Messages = list[dict]


@dataclass(frozen=True)
class Family:
    name: str
    marker: str                         # a string the family's Jinja template contains
    go_template: str                    # Ollama's TEMPLATE
    stops: tuple[str, ...]              # PARAMETER stop lines
    render: Callable[[Messages], str]   # the Go template's output, in Python (generation prompt included)
    system: bool = True                 # a system message is part of the layout


def _chatml(messages: Messages) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _llama3(messages: Messages) -> str:
    turns = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages)
    return turns + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _mistral(messages: Messages) -> str:
    out = ""
    for m in messages:
        if m["role"] == "user":
            out += f"[INST] {m['content']}[/INST]"
        elif m["role"] == "assistant":
            out += f" {m['content']}</s>"
    return out


def _gemma(messages: Messages) -> str:
    turns = "".join(f"<start_of_turn>{'model' if m['role'] == 'assistant' else m['role']}\n{m['content']}"
                    "<end_of_turn>\n" for m in messages)
    return turns + "<start_of_turn>model\n"


FAMILIES: tuple[Family, ...] = (
    Family("ChatML", "<|im_start|>",
           "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
           ("<|im_start|>", "<|im_end|>"), _chatml),
    Family("Llama 3", "<|start_header_id|>",
           "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
           "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
           ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), _llama3),
    Family("Mistral", "[INST]",
           '{{- range .Messages }}{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST]'
           '{{- else if eq .Role "assistant" }} {{ .Content }}</s>{{- end }}{{- end }}',
           ("[INST]", "[/INST]", "</s>"), _mistral, system=False),
    Family("Gemma", "<start_of_turn>",
           '{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n'
           "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
           ("<start_of_turn>", "<end_of_turn>"), _gemma, system=False),
)

#: conversations the Jinja template and the family's twin must render alike
PROBES: tuple[Messages, ...] = (
    [{"role": "user", "content": "Extract the contact as JSON.\n\nAda, Paris"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Why is the sky blue?"}],
)


@dataclass
class Translation:
    family: str | None          # None: not translated
    template: str | None
    stops: tuple[str, ...]
    system: str | None          # a default system prompt the Jinja template adds (SYSTEM in the Modelfile)
    note: str                   # one line for the report


def translate(render_jinja: Callable[[Messages], str], chat_template: str | None, bos: str | None = None,
              system: str | None = None) -> Translation:
    """The family whose layout reproduces ``render_jinja`` (the tokenizer's ``apply_chat_template`` with the
    generation prompt) on every probe, with ``system`` (the run's system prompt) as the Modelfile's SYSTEM.
    A template that adds a default system prompt when none is given keeps it, as SYSTEM."""
    if not chat_template:
        return Translation(None, None, (), system, "the tokenizer has no chat template: the Modelfile has no "
                           "TEMPLATE (Ollama sends the raw prompt)")
    for fam in FAMILIES:
        if fam.marker not in chat_template:
            continue
        default = _default_system(render_jinja, fam, bos) if fam.system else None
        if _agrees(render_jinja, fam, bos, default):
            note = f"chat template translated ({fam.name}), checked on {len(PROBES)} conversations"
            return Translation(fam.name, fam.go_template, fam.stops, system or default, note)
        return Translation(None, None, fam.stops, system, f"the chat template looks like {fam.name} but renders "
                           "differently from loratui's translation: the Modelfile has no TEMPLATE; write one by hand")
    return Translation(None, None, (), system, "the chat template is not a family loratui can translate (ChatML, "
                       "Llama 3, Mistral, Gemma): the Modelfile has no TEMPLATE; write one by hand")


def _strip_bos(text: str, bos: str | None, fam: Family) -> str:
    """llama.cpp and Ollama add BOS as a token; templates that print it as text agree without it (but ChatML's
    BOS is often <|im_start|> itself, which the layout prints)."""
    if bos and text.startswith(bos) and not fam.render([{"role": "user", "content": ""}]).startswith(bos):
        return text[len(bos):]
    return text


def _default_system(render_jinja, fam: Family, bos: str | None) -> str | None:
    """The system prompt a template inserts by itself (SmolLM2's 'You are a helpful AI assistant named SmolLM...')."""
    try:
        text = _strip_bos(render_jinja(list(PROBES[0])), bos, fam)
    except Exception:  # noqa: BLE001 - a template may refuse a conversation
        return None
    plain = fam.render(list(PROBES[0]))
    if text == plain:
        return None
    for candidate in _system_candidates(text, fam):
        if fam.render([{"role": "system", "content": candidate}, *PROBES[0]]) == text:
            return candidate
    return None


def _system_candidates(text: str, fam: Family) -> list[str]:
    head = fam.render([{"role": "system", "content": "\x00"}])
    start, _, end = head.partition("\x00")
    if not text.startswith(start):
        return []
    rest = text[len(start):]
    cut = end.split("\n")[0] or end
    return [rest.split(cut, 1)[0]] if cut and cut in rest else []


def _agrees(render_jinja, fam: Family, bos: str | None, default: str | None) -> bool:
    checked = 0
    for probe in PROBES:
        msgs = list(probe)
        if msgs[0]["role"] == "system" and not fam.system:
            continue
        try:
            want = _strip_bos(render_jinja(msgs), bos, fam)
        except Exception:  # noqa: BLE001 - e.g. a template that raises on a system message
            continue
        if default and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": default}, *msgs]
        if fam.render(msgs) != want:
            return False
        checked += 1
    return checked > 0


def modelfile(gguf_name: str, tr: Translation, name: str = "Modelfile", params: dict | None = None) -> str:
    """An Ollama Modelfile for one exported file."""
    lines = [f"# ollama create NAME -f {name}   then: ollama run NAME", f"FROM ./{gguf_name}"]
    if tr.template:
        lines.append(f'TEMPLATE """{tr.template}"""')
    else:
        lines.append(f"# no TEMPLATE: {tr.note}")
    if tr.system:
        lines.append(f'SYSTEM """{tr.system}"""')
    for stop in tr.stops:
        lines.append(f'PARAMETER stop "{stop}"')
    for key, value in (params or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"
