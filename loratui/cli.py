"""Command line: ``loratui`` opens the app; subcommands run the same engine headless."""

from __future__ import annotations

import argparse
import os
import sys

from loratui.commands import COMMAND_MODULES
from loratui.core.errors import LoratuiError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loratui", description="LoRA / QLoRA fine-tuning from the terminal. "
                                "With no command, opens the app.")
    p.add_argument("--config", help="open the app with this config in Setup")
    # its own dest: a subcommand's --runs-dir (default None) would otherwise overwrite the one given before it
    p.add_argument("--runs-dir", dest="app_runs_dir", default=None,
                   help="runs folder (default: ./runs or $LORATUI_RUNS_DIR)")
    p.add_argument("--no-notify", action="store_true",
                   help="no bell or desktop notification when a run finishes, fails, stalls or alerts "
                        "(or LORATUI_NOTIFY=off)")
    # internal commands (engine, queue-runner) get no help text: argparse then leaves them out of --help
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMAND_MODULES:
        module.register(sub)
    return p


def unknown_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """'unknown command 'trian' (did you mean 'train'?)' for a first word that is no command (argparse would list
    the internal ones too, and guess nothing); None when the words name a command or none."""
    import difflib

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    words = iter(argv)
    for word in words:  # the first word that is neither an option nor an option's value
        if word in ("--config", "--runs-dir"):
            next(words, None)
        elif not word.startswith("-"):
            if word in sub.choices:
                return None
            if word.endswith((".yaml", ".yml")):
                return (f"unknown command '{word}' (to open a config in the app: loratui --config {word}; "
                        f"to train it: loratui train {word})")
            public = [a.dest for a in sub._choices_actions]  # the commands with help text
            close = difflib.get_close_matches(word, public, n=1, cutoff=0.6)
            guess = f"did you mean '{close[0]}'?" if close else f"commands: {', '.join(public)}"
            return f"unknown command '{word}' ({guess})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    wrong = unknown_command(parser, argv)
    if wrong:
        print(f"error: {wrong}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.app_runs_dir and getattr(args, "runs_dir", None) is None:  # `loratui --runs-dir X runs` reads X
        args.runs_dir = args.app_runs_dir
    try:
        if args.command is None:
            from loratui.ui.app import run_app

            if args.no_notify:
                os.environ["LORATUI_NOTIFY"] = "off"

            # an explicit --runs-dir (or $LORATUI_RUNS_DIR) wins; otherwise the config's output.runs_dir
            run_app(args.config, args.app_runs_dir or os.environ.get("LORATUI_RUNS_DIR"))
            return 0
        return args.func(args)
    except LoratuiError as err:
        from loratui.core.fmt import printable

        print(f"error: {printable(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `loratui runs | head`: the reader has gone; no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE
