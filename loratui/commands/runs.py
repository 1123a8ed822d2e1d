"""Commands of one run: ``train`` (foreground, --detach, --resume), ``engine`` (internal), ``runs``, ``stop``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from loratui.commands.common import default_runs_dir, find_run, quiet_libraries
from loratui.core.errors import LoratuiError


def register(sub) -> None:
    t = sub.add_parser("train", help="run training in the foreground")
    t.add_argument("config", nargs="?", help="YAML config")
    t.add_argument("--resume", metavar="RUN", help="continue a stopped run from its newest checkpoint (its folder, "
                   "or its name in the runs folder)")
    t.add_argument("--runs-dir", default=None, help="runs folder (overrides output.runs_dir)")
    t.add_argument("--name", help="run folder name (overrides output.name)")
    t.add_argument("--detach", action="store_true", help="start the engine in the background and return")
    t.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights: unpickling can run code hidden in the file, so only for files you trust")

    e = sub.add_parser("engine")
    e.add_argument("run_dir")
    e.add_argument("--resume", action="store_true")
    e.add_argument("--nproc", type=int, default=1)  # several: supervise torchrun with one process a card

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--runs-dir", default=None)
    r.add_argument("--json", action="store_true")

    s = sub.add_parser("stop", help="stop a running run gracefully (adapter saved)")
    s.add_argument("run_dir", help="the run's folder, or its name in the runs folder (as `loratui runs` lists it)")
    s.add_argument("--runs-dir", default=None, help="runs folder for a name (default: ./runs or $LORATUI_RUNS_DIR)")
    for name, func in (("train", cmd_train), ("engine", cmd_engine), ("runs", cmd_runs), ("stop", cmd_stop)):
        sub.choices[name].set_defaults(func=func)


def cmd_train(args) -> int:
    from loratui.core import runs
    from loratui.core.config import load_config

    lock = None
    if args.resume:
        run = find_run(args.resume, args.runs_dir, "--resume")
        # one engine per run: the lock before anything else (a second resume is told who holds it, and touches nothing)
        lock = runs.RunLock.acquire(run.path)
        state = run.state()
        if state.active:
            raise LoratuiError(f"{run.name} is still running", field="--resume", hint="stop it first: loratui stop")
        if state == "finished":
            raise LoratuiError(f"{run.name} already finished", field="--resume",
                               hint="start a new run from its config: loratui train " + str(run.config_path))
    else:
        if not args.config:
            raise LoratuiError("give a config file or --resume RUN_DIR", field="train",
                               hint="e.g. loratui train sample_configs/smollm2-demo.yaml")
        cfg = load_config(args.config)
        if args.allow_pickle:
            cfg.model.allow_pickle = True  # saved with the run, so --resume keeps it
        if args.runs_dir:
            cfg.output.runs_dir = args.runs_dir
        if args.name:
            cfg.output.name = runs.check_run_name(args.name)
        from loratui.core.devices import plan_devices

        os.environ.update(plan_devices(cfg).env())  # before anything touches CUDA: exactly the chosen cards
        quiet_libraries()
        from loratui.train import preflight

        print("checking config, model and data...", flush=True)
        preflight.check(cfg)
        run = runs.create_run(cfg)
        lock = runs.RunLock.acquire(run.path)
        print(f"run folder: {run.path}", flush=True)
    from loratui.core.devices import plan_devices

    endpoint = run.config().train.rdzv_endpoint or ""
    plan = plan_devices(run.config())
    print(f"devices: {plan.describe()}", flush=True)
    for note in plan.notes:
        print(note, flush=True)
    if plan.nodes > 1:
        from loratui.core.supervisor import other_node_command

        print(f"this node joins a {plan.nodes}-node run at {endpoint}; on each other node, with the run folder on a "
              f"shared filesystem and the same cards, run:\n  {other_node_command(run, plan.processes, plan.nodes, endpoint)}",
              flush=True)
    if args.detach:
        pid = runs.launch_detached(run, resume=bool(args.resume), lock=lock)
        print(f"engine started (pid {pid}); watch it with: loratui, or tail -f {run.log_path}")
        return 0
    os.environ.update(plan.env())  # exactly the chosen cards (no silent DataParallel over the others)
    if plan.world_size > 1:
        from loratui.core.supervisor import supervise

        code = supervise(run, plan.processes, resume=bool(args.resume), nodes=plan.nodes, endpoint=endpoint or None)
        return 130 if run.state() == "stopped" else code
    quiet_libraries()
    from loratui.train.engine import Engine

    code = Engine(run, resume=bool(args.resume)).run()
    state = run.state()
    if state == "stopped":
        return 130
    return code


def cmd_engine(args) -> int:
    from loratui.core.devices import running_under_torchrun

    if not running_under_torchrun():
        from loratui.core.runs import RunDir

        run = RunDir(Path(args.run_dir))
        train = run.config().train
        if args.nproc > 1 or train.nodes > 1:
            from loratui.core.supervisor import supervise

            return supervise(run, args.nproc, resume=args.resume, nodes=train.nodes, endpoint=train.rdzv_endpoint)
    quiet_libraries()
    from loratui.train.engine import main as engine_main

    return engine_main(args.run_dir, resume=args.resume)


#: a row's width after the name: state, method, progress, time, ETA and best, each with its space
ROW_AFTER_NAME = 1 + 10 + 1 + 9 + 1 + 13 + 1 + 8 + 1 + 8 + 1 + 11


def cmd_runs(args) -> int:
    from loratui.core.fmt import format_duration, printable
    from loratui.core.runs import list_runs

    folder = Path(args.runs_dir or default_runs_dir()).expanduser()
    items = list_runs(folder)
    if args.json:
        print(json.dumps([s.to_json() for s in items], indent=1))
        return 0
    if not items:  # a mistyped --runs-dir is not an empty one
        print(f"no runs in {folder}" if folder.is_dir() else f"no runs: {folder} does not exist (--runs-dir, or "
              "$LORATUI_RUNS_DIR, names the runs folder)")
        return 0
    width = min(64, max(4, *(len(printable(s.name)) for s in items)))  # names never push the columns
    # the terminal's width ($COLUMNS first; piped output stays wide): the started column goes first, then names
    # are shortened to at least 12 characters
    cols = shutil.get_terminal_size((200, 24)).columns
    after = ROW_AFTER_NAME + 2 + len("yyyy-mm-dd hh:mm")
    started = width + after <= cols or cols - after >= 16
    width = min(width, max(12, cols - (after if started else ROW_AFTER_NAME)))
    print(f"{'name':<{width}} {'state':<10} {'method':<9} {'progress':>13} {'time':>8} {'ETA':>8} {'best':>11}"
          + ("  started" if started else ""))
    for s in items:  # names, errors and problems come from files: escaped, never sent to the terminal raw
        prog = f"{s.progress_text} {s.progress * 100:3.0f}%" if s.max_steps else s.progress_text
        # the task's metric: accuracy for a classifier, the eval loss otherwise (never the base model's own)
        best = f"acc {s.best_accuracy:.3f}" if s.best_accuracy is not None else \
            f"loss {s.best_eval_loss:.4f}" if s.best_eval_loss is not None else "-"
        eta = format_duration(s.eta) if s.state.active else "-"
        name = printable(s.name)
        name = name if len(name) <= width else name[:width - 1] + "…"
        print(f"{name:<{width}} {str(s.state):<10} {printable(s.method_text):<9} {prog:>13} "
              f"{format_duration(s.elapsed):>8} {eta:>8} {best:>11}" + (f"  {s.started_text}" if started else ""))
        if s.state == "stalled":
            print(f"  ! no progress for {format_duration(s.stalled_for)} (its engine lives; it counts as stalled "
                  f"after {format_duration(s.stall_after)} of silence): a hung collective, a stuck data loader, a "
                  f"frozen filesystem or a stopped process; `loratui stop {printable(s.name)}` asks it to stop")
        if s.alerts:
            last = s.alerts[-1]
            more = f" ({len(s.alerts)} alerts)" if len(s.alerts) > 1 else ""
            print(f"  ⚠ {printable(last.get('message') or last.get('alert'), 300)}{more}")
        if s.problem:
            print(f"  ! {printable(s.problem, 300)}")
        elif s.error and s.state == "failed":
            print(f"  ✖ {printable(s.error, 300)}")
    return 0


def cmd_stop(args) -> int:
    from loratui.core.runs import stop_run

    run = find_run(args.run_dir, args.runs_dir, "run_dir")
    if stop_run(run):
        print(f"asked {run.name} to stop; it saves its adapter and checkpoint first")
        return 0
    raise LoratuiError(f"{run.name} is not running (state: {run.state()})", field="run_dir")
