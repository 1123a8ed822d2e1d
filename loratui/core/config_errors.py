"""One-line messages for a config that does not validate: the field path, what is wrong, what is allowed.

Light module (pydantic only).
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from loratui.core.config_base import MAX_TEXT


def validation_message(err: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """First error of validating ``root`` as one line: ``lora.r: must be a positive whole number (try 8 or 16)``."""
    e = err.errors()[0]
    loc = ".".join(short(str(p), 60) for p in e["loc"] if not str(p).startswith("function-")) or "config"
    if prefix:
        loc = f"{prefix}.{loc}" if loc != "config" else prefix
    kind = e["type"]
    if kind == "extra_forbidden":
        section, _, key = loc.rpartition(".")
        model = section_model(root, section)
        allowed = ", ".join(model.model_fields) if model else ""
        return f"{loc}: unknown key '{key}' (allowed here: {allowed})"
    if kind == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        return f"{loc}: {short(repr(e['input']))} is not allowed (choose one of {expected})"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_parsing",
                "float_parsing", "bool_parsing", "int_from_float", "finite_number"):
        msg = f"{msg}, got {short(repr(e['input']))}"
    if kind == "string_too_long":
        msg = f"is {len(e['input'])} characters long; at most {MAX_TEXT} are allowed"
    head, sep, rest = msg.partition(": ")
    if sep and "." in head and " " not in head and (loc == "config" or head.startswith(loc + ".")):
        loc, msg = head, rest  # a cross-field check names its field itself
    return " ".join(f"{loc}: {short(msg, 300)}".split())


def short(text: str, limit: int = 80) -> str:
    """Hostile input (a 100k-character name) must not make a 100k-character error line."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 15]}... ({len(text)} chars)"


def section_model(root: type[BaseModel], path: str) -> type[BaseModel] | None:
    """The pydantic model of the section at ``path`` (dotted) under ``root``; None where it is not a section."""
    model: type[BaseModel] = root
    if not path:
        return model
    for part in path.split("."):
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model
