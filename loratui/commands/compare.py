"""``loratui compare``: runs side by side, as the app's Compare screen shows and exports them (``e``): a study's runs
(a detached one's too, finished or still going) or the runs named."""

from __future__ import annotations

import sys
from pathlib import Path

from loratui.commands.common import default_runs_dir, find_run
from loratui.core.errors import LoratuiError


def register(sub) -> None:
    c = sub.add_parser("compare", help="print runs side by side: a study's (finished or still going) or the runs "
                       "named; as the app's Compare exports them")
    c.add_argument("runs", nargs="*", metavar="RUN",
                   help="run folders, or names in the runs folder (as `loratui runs` lists them)")
    c.add_argument("--study", help="a study's runs (its newest batch); with no RUN and no --study: the newest study, "
                                   "else the 6 newest runs")
    c.add_argument("--runs-dir", default=None, help="runs folder (default: ./runs or $LORATUI_RUNS_DIR)")
    c.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")
    c.add_argument("--export", metavar="DIR", help="also write the comparison (CSV + Markdown) here")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from loratui.core import compare
    from loratui.core.fmt import printable

    folder = Path(args.runs_dir or default_runs_dir()).expanduser()
    if args.runs and args.study:
        raise LoratuiError("give runs or --study, not both", field="--study",
                           hint="loratui compare RUN RUN ..., or loratui compare --study NAME")
    study = None
    if args.runs:
        paths = [run.path for run in named_runs(args.runs, args.runs_dir)]
        title = f"{len(paths)} selected runs"
    elif args.study:
        study = args.study
        paths = study_paths(folder, study)
        title = f"Study {study}"  # the app's export title
    else:  # as the app's Compare opens: the newest study, else the newest runs
        paths, heading, study = compare.default_selection(folder)
        if not paths:
            raise LoratuiError(f"no runs in {folder}", field="RUN",
                               hint="`loratui runs --runs-dir DIR` lists a folder's runs; train one first")
        title = heading[:1].upper() + heading[1:]  # the app's export title
    rows = compare.read_runs(paths)
    text = compare.to_csv(rows) if args.csv else compare.to_markdown(rows, title=title)
    for line in text.splitlines():  # names, labels and values come from files: escaped, never sent raw
        print(printable(line))
    live = [r for r in rows if r.state in compare.NOT_DONE]
    if live:  # to stderr: stdout stays a clean table for a file or a pipe
        print(f"{len(live)} of {len(rows)} runs not done yet ({', '.join(printable(r.name, 80) for r in live[:3])}"
              f"{' ...' if len(live) > 3 else ''}): their values are the latest so far", file=sys.stderr)
    if args.export:
        csv_path, md_path = compare.export(rows, args.export, title=title, stem=study)
        print(f"exported {csv_path} and {md_path}", file=sys.stderr if args.csv else sys.stdout)
    return 0


def named_runs(specs: list[str], runs_dir: str | None) -> list:
    """The runs named on the command line; one error naming every one that is not there."""
    found, missing = [], []
    for spec in specs:
        try:
            found.append(find_run(spec, runs_dir, "RUN"))
        except LoratuiError:
            missing.append(spec)
    if missing:
        from loratui.core.fmt import shorten_list

        where = Path(runs_dir or default_runs_dir()).expanduser()
        raise LoratuiError(f"no run named {shorten_list(missing)} (no such folder, nor a run of that name in "
                           f"{where})", field="RUN",
                           hint="`loratui runs` lists the names; --runs-dir for another runs folder")
    return found


def study_paths(folder: Path, study: str) -> list[Path]:
    """A study's run folders (its newest batch, in the order planned), as the app's Compare reads them."""
    from loratui.core.fmt import printable, shorten_list
    from loratui.core.study import list_studies, study_runs

    paths = study_runs(folder, study)
    if not paths:
        names = [name for name, _, _ in list_studies(folder)]
        known = f"studies there: {shorten_list(names)}" if names else "it holds no studies"
        raise LoratuiError(f"no study named '{printable(study, 80)}' in {folder}", field="--study",
                           hint=f"{known}; --runs-dir for another runs folder")
    return paths
