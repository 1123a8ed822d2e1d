"""The command line's commands, one module a group; each module's ``register(sub)`` adds its subcommands to the
parser and points them at their functions (``args.func``). ``loratui/cli.py`` holds the parser's top and ``main``.
Modules load heavy libraries inside the functions, so ``loratui --help`` and the app start fast."""

from __future__ import annotations

from loratui.commands import compare, export, models, queue, runs

COMMAND_MODULES = (runs, models, export, queue, compare)
