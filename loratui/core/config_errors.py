"""One-line messages for a config that does not validate: the field path, what is wrong, what is allowed.

Light module (pydantic only).
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from loratui.core.config_base import MAX_TEXT


def _loc(e: dict, prefix: str) -> str:
    loc = ".".join(short(str(p), 60) for p in e["loc"] if not str(p).startswith("function-")) or "config"
    if prefix:
        loc = f"{prefix}.{loc}" if loc != "config" else prefix
    return loc


def validation_message(err: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """First error of validating ``root`` as one line: ``lora.r: must be a positive whole number (try 8 or 16)``,
    and the fields of the others after it (``; also to fix: train.lr, train.batch_size``), so a config with several
    mistakes is not fixed one run at a time."""
    errors = err.errors()
    line = error_line(errors[0], root, prefix)
    first = line.partition(": ")[0]
    others = list(dict.fromkeys(_other(e, root, prefix) for e in errors[1:] if _loc(e, prefix) != first))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        more = f"; also to fix: {shown}"
        line += more if len(line) + len(more) <= 640 else f"; {len(others)} more field(s) to fix"
    return line


def _other(e: dict, root: type[BaseModel], prefix: str) -> str:
    """A field in the 'also to fix' list: its path, and for an unknown key the name it likely meant, as the first
    error says it (``train.batch_sise (did you mean 'batch_size'?)``)."""
    loc = _loc(e, prefix)
    if e["type"] == "extra_forbidden":
        section, _, key = loc.rpartition(".")
        guess = unknown_key_guess(root, section, key)
        if guess:
            return f"{loc} ({guess})"
    return loc


def error_line(e: dict, root: type[BaseModel], prefix: str = "") -> str:
    """One of pydantic's errors as the line users read: ``lora.r: must be ... , got 'abc'``."""
    loc = _loc(e, prefix)
    kind = e["type"]
    if kind == "extra_forbidden":
        section, _, key = loc.rpartition(".")
        return f"{loc}: unknown key '{key}' ({unknown_key_hint(root, section, key)})"
    if kind == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        return f"{loc}: {short(repr(e['input']))} is not allowed (choose one of {expected})"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_parsing",
                "float_parsing", "bool_parsing", "int_from_float", "finite_number"):
        msg = f"{plain_words(msg)}, got {short(repr(e['input']))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        msg += _default_of(root, loc)
    if kind == "string_too_long":
        msg = f"is {len(e['input'])} characters long; at most {MAX_TEXT} are allowed"
    head, sep, rest = msg.partition(": ")
    if sep and "." in head and " " not in head and (loc == "config" or head.startswith(loc + ".")):
        loc, msg = head, rest  # a cross-field check names its field itself
    return " ".join(f"{loc}: {short(msg, 300)}".split())


#: pydantic's words and the plainer ones users read (the CLI's lines and the form's fields)
PYDANTIC_WORDS = {
    "Input should be a valid number, unable to parse string as a number": "must be a number",
    "Input should be a valid integer, unable to parse string as an integer": "must be a whole number",
    "Input should be a valid integer, got a number with a fractional part": "must be a whole number",
    "Input should be greater than or equal to": "must be at least",
    "Input should be greater than": "must be more than",
    "Input should be less than or equal to": "must be at most",
    "Input should be less than": "must be less than",
}


def plain_words(message: str) -> str:
    for long, plain in PYDANTIC_WORDS.items():
        if message.startswith(long):
            return plain + message[len(long):]
    return message


def _default_of(root: type[BaseModel], loc: str) -> str:
    """`` (the default is 1)`` for a numeric field: a value to go back to; else nothing."""
    section, _, key = loc.rpartition(".")
    model = section_model(root, section)
    default = getattr(model.model_fields.get(key), "default", None) if model else None
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return f" (the default is {default:g})"
    return ""


#: the names users bring from transformers' TrainingArguments and peft's LoraConfig, and ours
KNOWN_NAMES = {"learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size",
               "per_device_eval_batch_size": "eval_batch_size", "gradient_accumulation_steps": "grad_accum",
               "lr_scheduler_type": "scheduler", "lora_alpha": "alpha", "lora_dropout": "dropout", "rank": "r",
               "use_dora": "dora", "use_rslora": "rslora", "model_name": "name", "model_name_or_path": "name",
               "dataset": "source", "output_dir": "runs_dir"}


def unknown_key_hint(root: type[BaseModel], section: str, key: str) -> str:
    """``did you mean 'lr'?`` (a name from transformers or peft, or a close spelling), ``it belongs under train:``
    (a key of another section), else the keys allowed here."""
    guess = unknown_key_guess(root, section, key)
    if guess:
        return guess
    model = section_model(root, section)
    return f"allowed here: {', '.join(model.model_fields) if model else ''}"


def unknown_key_guess(root: type[BaseModel], section: str, key: str) -> str | None:
    """:func:`unknown_key_hint` when it has a name to offer (``did you mean 'lr'?``, ``it belongs under train:``);
    None when it would only list the keys allowed."""
    import difflib

    model = section_model(root, section)
    fields = list(model.model_fields) if model else []
    guess = KNOWN_NAMES.get(key.lower())
    if guess not in fields:
        close = difflib.get_close_matches(key.lower(), fields, n=1, cutoff=0.7)
        guess = close[0] if close else None
    if guess:
        return f"did you mean '{guess}'?"
    if "." not in section:  # a top-level section: is the key another section's?
        ours = KNOWN_NAMES.get(key.lower(), key)
        for name in root.model_fields:
            other = section_model(root, name)
            if name != section and other is not None and ours in other.model_fields:
                return f"it belongs under {name}:" if ours == key else f"did you mean {name}.{ours}?"
    return None


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


def yaml_problem(err: Exception) -> str:
    """`` at line 3: could not find expected ':'``: the line of what PyYAML was reading when it stopped (a key whose
    colon is missing, an unclosed brace: where it began) and, when the parser gave up on another line, that line
    too (a QA walk looked for a mistake on line 1 that was on line 2); then what it found ('' if unknown)."""
    begun, found = getattr(err, "context_mark", None), getattr(err, "problem_mark", None)
    mark = begun or found
    where = f" at line {mark.line + 1}" if mark else ""
    if begun and found and found.line != begun.line and "<stream end>" not in str(getattr(err, "problem", "")):
        where += f" (read up to line {found.line + 1})"  # both: the line that is wrong may be either
    problem = getattr(err, "problem", None)
    return f"{where}: {short(problem, 100)}" if problem else where
