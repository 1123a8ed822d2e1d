"""The package's rooms and their one-way doors, read from the source (every import, also those inside functions).

core  (config, protocol, runs, adapters, gpu): no torch and friends, no Textual, nothing from train or ui
train (models, data, engine, merge, ...):     core only; never Textual or the UI
ui    (app, screens, widgets):                core only; the training side is reached through processes
commands (the command line's subcommands):   core, and train inside the functions; never Textual (the app is
                                             opened by loratui/cli.py)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "loratui"
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "evaluate", "accelerate", "safetensors")
FORBIDDEN = {
    "core": ("loratui.train", "loratui.ui", "textual", "textual_plotext", "plotext") + HEAVY,
    "train": ("loratui.ui", "textual", "textual_plotext", "plotext"),
    "ui": ("loratui.train",) + HEAVY,
    "commands": ("loratui.ui", "textual", "textual_plotext", "plotext"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "loratui":
                found += [(node.lineno, f"loratui.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; name the room (loratui.core....)")
    return found


def crosses(module: str, forbidden: tuple[str, ...]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_go_through_the_doors_one_way(room):
    files = sorted((PKG / room).rglob("*.py"))
    assert files, f"room {room} is empty"
    wrong = [f"{p.relative_to(PKG.parent)}:{line} imports {mod}"
             for p in files for line, mod in imported_modules(p) if crosses(mod, FORBIDDEN[room])]
    assert not wrong, "\n".join(wrong)


def test_every_module_lives_in_a_room():
    loose = sorted(p.name for p in PKG.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "cli.py"], loose


def test_the_door_check_sees_a_crossing(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from loratui.train import engine\n    import torch.nn\n")
    mods = [m for _, m in imported_modules(bad)]
    assert crosses(mods[0], FORBIDDEN["ui"]) and crosses(mods[1], FORBIDDEN["core"])
