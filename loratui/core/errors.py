"""The one error type users see: a one-line message naming the field, plus a hint saying what to do."""

from __future__ import annotations


class LoratuiError(Exception):
    """A user-facing error. ``str()`` is one line: ``field: message (hint)``."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None,
                 summary: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.summary = summary
        """A few words for a narrow place (under a form field), when ``message`` is long; the message keeps every
        detail (what the CLI prints and a run's failed event records)."""

    def __str__(self) -> str:  # one line, always
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "field": self.field, "hint": self.hint}


class ConfigError(LoratuiError):
    """The config is invalid."""


class DataError(LoratuiError):
    """The dataset cannot be read or formatted."""


class ModelError(LoratuiError):
    """The model cannot be found or loaded as asked."""


class RunError(LoratuiError):
    """A run folder problem: exists already, nothing to resume, not a run."""
