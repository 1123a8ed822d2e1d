"""A config file with mistakes, opened to be fixed in place: its valid values over the defaults, and each value
that does not validate kept by field, for Setup to show in that field, marked (``loratui broken.yaml``, Setup's
Open). What ``loratui train`` says of such a file is unchanged: its one-line error.

Light module (pydantic, yaml).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loratui.core.config import ConfigError, RunConfig, read_config_data, resolve_paths
from loratui.core.config_errors import error_line

#: rounds of taking out the values pydantic names before giving up (each round takes out at least one)
_MAX_ROUNDS = 64


@dataclass
class ConfigDraft:
    config: RunConfig
    """The file's valid values over the defaults."""
    bad: dict[str, Any] = field(default_factory=dict)
    """``section.key`` -> the file's value that does not validate (the field keeps the default meanwhile)."""
    messages: dict[str, str] = field(default_factory=dict)
    """``section.key`` -> the one-line message of each value taken out (``bad`` and ``unknown`` alike)."""
    unknown: list[str] = field(default_factory=list)
    """Keys that are no setting (``train.learning_rate``): left out, their message says the name to use."""


def draft_from_dict(data: Any) -> ConfigDraft | None:
    """The draft of a config mapping; None when a mistake is not one key's (a section that is not a mapping of
    keys, sections that contradict each other), so the caller gives the one-line error instead."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None
    data = copy.deepcopy(data)
    draft = ConfigDraft(RunConfig())
    for _ in range(_MAX_ROUNDS):
        try:
            draft.config = RunConfig.model_validate(data)
            return draft
        except ValidationError as err:
            if not any(_take_out(data, e, draft) for e in err.errors()):
                return None
        except RecursionError:
            return None
    return None


def _take_out(data: dict, e: dict, draft: ConfigDraft) -> bool:
    """Take the value that error ``e`` is about out of ``data`` into ``draft``; False when it names no one key."""
    loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
    line = error_line(e, RunConfig)
    if len(loc) < 2:  # a whole section, or the config: a check across keys may name its key in its message
        head = line.partition(": ")[0]
        loc = head.split(".") if head.count(".") == 1 else loc
    if len(loc) < 2 or not isinstance(data.get(loc[0]), dict) or loc[1] not in data[loc[0]]:
        if len(loc) == 1 and e["type"] == "extra_forbidden" and loc[0] in data:  # an unknown section
            data.pop(loc[0])
            draft.unknown.append(loc[0])
            draft.messages[loc[0]] = line
            return True
        return False
    path = f"{loc[0]}.{loc[1]}"
    value = data[loc[0]].pop(loc[1])
    if e["type"] == "extra_forbidden":
        draft.unknown.append(path)
    else:
        draft.bad[path] = value
    draft.messages[path] = line
    return True


def read_draft(path: str | Path) -> ConfigDraft | None:
    """The draft of a config file; None when there is nothing to put in the form (a file that is not readable
    YAML, or ``draft_from_dict``'s None): the caller shows the file's one-line error."""
    path = Path(path).expanduser()
    try:
        data = read_config_data(path)
    except ConfigError:
        return None
    draft = draft_from_dict(data)
    if draft is not None:
        draft.config = resolve_paths(draft.config, path.parent)
    return draft
