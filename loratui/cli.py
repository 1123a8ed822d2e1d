"""Command line: ``loratui`` opens the app; subcommands run the same engine headless."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loratui.core.errors import LoratuiError
from loratui.core.merge_check import DEFAULT_MERGE_DTYPE, DTYPE_HELP, MERGE_DTYPES


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # variable-length batches fragment the CUDA caching allocator: measured on an H100 (bench/RESULTS.md),
    # expandable segments keep reserved memory close to what is allocated
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers
        import datasets

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # data errors are reported as one line
    except Exception:
        pass


def default_runs_dir() -> str:
    return os.environ.get("LORATUI_RUNS_DIR", "runs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loratui", description="LoRA / QLoRA fine-tuning from the terminal. "
                                "With no command, opens the app.")
    p.add_argument("--config", help="open the app with this config in Setup")
    p.add_argument("--runs-dir", default=None, help="runs folder (default: ./runs or $LORATUI_RUNS_DIR)")
    p.add_argument("--no-notify", action="store_true",
                   help="no bell or desktop notification when a run finishes, fails, stalls or alerts "
                        "(or LORATUI_NOTIFY=off)")
    # internal commands (engine, queue-runner) get no help text: argparse then leaves them out of --help
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")

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

    m = sub.add_parser("merge", help="merge an adapter into its base model")
    m.add_argument("adapter")
    m.add_argument("output")
    m.add_argument("--base", help="base model (default: the one named in the adapter)")
    m.add_argument("--dtype", default=DEFAULT_MERGE_DTYPE, choices=MERGE_DTYPES,
                   help=f"weights dtype of the merged model (default: %(default)s; the app's wizard uses the same). "
                        + ", ".join(f"{k} ({v})" for k, v in DTYPE_HELP.items()))
    m.add_argument("--jsonl", action="store_true", help="print progress as JSON lines (for the app)")
    m.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights: unpickling can run code hidden in the file, so only for files you trust")

    es = sub.add_parser("estimate", help="trainable parameters and memory estimate for a config")
    es.add_argument("config")

    ly = sub.add_parser("layers", help="list a model's linear layers (LoRA target candidates)")
    ly.add_argument("model", help="alias, folder or hub id")
    ly.add_argument("--task", choices=["causal-lm", "seq-cls"],
                    help="the model as it is fine-tuned (default: seq-cls for encoders such as BERT, else causal-lm)")
    ly.add_argument("--names", action="store_true", help="only the names, one a line")

    sub.add_parser("presets", help="list target-module presets and built-in models")

    st = sub.add_parser("study", help="queue a study (a config and a grid of variations) and run it")
    st.add_argument("file", help="study YAML (see sample_configs/*study*.yaml)")
    st.add_argument("--runs-dir", default=None, help="runs folder (overrides the config's output.runs_dir)")
    st.add_argument("--detach", action="store_true", help="queue it, start the background runner and return")
    st.add_argument("--dry-run", action="store_true", help="list the runs it expands to, start nothing")
    st.add_argument("--gpus", help="run side by side, one run per GPU: 0,1 or auto (every GPU that is free)")
    st.add_argument("--export", metavar="DIR", help="write the comparison (CSV + Markdown) here when done")

    qu = sub.add_parser("queue", help="list the run queue")
    qu.add_argument("--runs-dir", default=None)
    qu.add_argument("--start", action="store_true", help="start the queue runner when runs wait and none runs")
    qu.add_argument("--gpus", default=None, help="with --start: cards for the runner (0,1 or auto)")

    qr = sub.add_parser("queue-runner")
    qr.add_argument("runs_dir")
    qr.add_argument("--gpus")

    g = sub.add_parser("generate", help="try a model or adapter on a prompt")
    g.add_argument("model", help="adapter folder, merged model folder, alias or hub id")
    g.add_argument("prompt", nargs="+")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights: unpickling can run code hidden in the file, so only for files you trust")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            from loratui.ui.app import run_app

            if args.no_notify:
                os.environ["LORATUI_NOTIFY"] = "off"

            # an explicit --runs-dir (or $LORATUI_RUNS_DIR) wins; otherwise the config's output.runs_dir
            run_app(args.config, args.runs_dir or os.environ.get("LORATUI_RUNS_DIR"))
            return 0
        return COMMANDS[args.command](args)
    except LoratuiError as err:
        from loratui.core.fmt import printable

        print(f"error: {printable(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


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
        _quiet_libraries()
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
    _quiet_libraries()
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
    _quiet_libraries()
    from loratui.train.engine import main as engine_main

    return engine_main(args.run_dir, resume=args.resume)


def cmd_runs(args) -> int:
    from loratui.core.fmt import format_duration, printable
    from loratui.core.runs import list_runs

    items = list_runs(args.runs_dir or default_runs_dir())
    if args.json:
        print(json.dumps([s.to_json() for s in items], indent=1))
        return 0
    if not items:
        print("no runs")
        return 0
    width = min(64, max(4, *(len(printable(s.name)) for s in items)))  # names never push the columns
    print(f"{'name':<{width}} {'state':<10} {'method':<9} {'progress':>13} {'time':>8} {'ETA':>8} {'best':>11}  "
          "started")
    for s in items:  # names, errors and problems come from files: escaped, never sent to the terminal raw
        prog = f"{s.progress_text} {s.progress * 100:3.0f}%" if s.max_steps else s.progress_text
        # the task's metric: accuracy for a classifier, the eval loss otherwise (never the base model's own)
        best = f"acc {s.best_accuracy:.3f}" if s.best_accuracy is not None else \
            f"loss {s.best_eval_loss:.4f}" if s.best_eval_loss is not None else "-"
        eta = format_duration(s.eta) if s.state.active else "-"
        name = printable(s.name)
        name = name if len(name) <= width else name[:width - 1] + "…"
        print(f"{name:<{width}} {str(s.state):<10} {printable(s.method or '-'):<9} {prog:>13} "
              f"{format_duration(s.elapsed):>8} {eta:>8} {best:>11}  {s.started_text}")
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


def find_run(spec: str, runs_dir: str | None, field: str):
    """A run named on the command line: its folder, or its name in the runs folder (``loratui runs`` lists names)."""
    from loratui.core.runs import RunDir

    folder = Path(spec).expanduser()
    candidates = [folder]
    if len(folder.parts) == 1:
        candidates.append(Path(runs_dir or default_runs_dir()).expanduser() / spec)
    for path in candidates:
        run = RunDir(path)
        if run.config_path.is_file():
            return run
    where = " or ".join(str(c) for c in candidates)
    raise LoratuiError(f"no run folder at {where}", field=field,
                       hint="give a run's folder or a name from `loratui runs` (--runs-dir for another runs folder)")


def cmd_stop(args) -> int:
    from loratui.core.runs import stop_run

    run = find_run(args.run_dir, args.runs_dir, "run_dir")
    if stop_run(run):
        print(f"asked {run.name} to stop; it saves its adapter and checkpoint first")
        return 0
    raise LoratuiError(f"{run.name} is not running (state: {run.state()})", field="run_dir")


def cmd_merge(args) -> int:
    _quiet_libraries()
    from loratui.train.merge import merge_adapter

    def progress(step: str, frac: float) -> None:
        if args.jsonl:
            print(json.dumps({"kind": "progress", "step": step, "fraction": frac}), flush=True)
        else:
            print(f"[{frac:4.0%}] {step}", flush=True)

    try:
        result = merge_adapter(args.adapter, args.output, base=args.base, dtype=args.dtype, progress=progress,
                               allow_pickle=args.allow_pickle)
    except LoratuiError as err:
        if args.jsonl:
            message = f"{err.field}: {err.message}" if err.field else err.message
            print(json.dumps({"kind": "failed", "message": message, "hint": err.hint}), flush=True)
        raise
    except Exception as err:  # noqa: BLE001
        if args.jsonl:
            print(json.dumps({"kind": "failed", "message": f"{type(err).__name__}: {err}".splitlines()[0],
                              "hint": None}), flush=True)
            return 1
        raise
    if args.jsonl:
        print(json.dumps({"kind": "done", **result}), flush=True)
    else:
        print(f"merged model: {result['output']} ({result['size_bytes'] / 2**20:.1f} MiB, {result['dtype']}, "
              f"{result['seconds']} s)")
        print(result["check"]["summary"])
    return 0


def cmd_estimate(args) -> int:
    _quiet_libraries()
    from loratui.core.config import load_config
    from loratui.train.estimate import count_params, estimate_memory

    cfg = load_config(args.config)
    print(count_params(cfg))
    report = estimate_memory(cfg)
    print(report.format_table())
    line = _per_card_line(cfg, report.rows[0])
    if line:
        print(line)
    from loratui.train.fit import preview

    fitted = preview(cfg)  # on a GPU box: what the engine's memory fit would choose on this card now
    if fitted:
        print(fitted)
    return 0


def _per_card_line(cfg, row) -> str | None:
    """On several cards, what each one holds (as Setup shows it): the strategy the engine would pick there."""
    from loratui.core.devices import plan_devices
    from loratui.core.gpu import query_gpus
    from loratui.train.distributed import World, strategy
    from loratui.train.estimate import gib

    try:
        visible = list(query_gpus())
        plan = plan_devices(cfg, visible)
    except (LoratuiError, ImportError):
        return None  # no NVML, or train.gpus can't be met here: the run itself says so at launch
    if plan.processes <= 1:
        return None
    cards = plan.gpus
    sizes = [g.memory_total for g in visible if g.index in cards and getattr(g, "memory_total", None)]
    how = strategy(cfg, World(size=len(cards)), min(sizes) if sizes else None, single_card_bytes=row.total)
    share = "a full replica" if how == "ddp" else "weights, grads and optimizer states sharded"
    return f"on {len(cards)} cards ({how.upper()}, {share}): {gib(row.per_card(how, len(cards)))} GiB a card"


def cmd_layers(args) -> int:
    _quiet_libraries()
    from loratui.core.config import RunConfig
    from loratui.core.fmt import format_count
    from loratui.train.models import describe_linear_layers, guess_task

    cfg = RunConfig()
    cfg.model.name = args.model
    cfg.model.task = args.task or guess_task(cfg)
    rows = describe_linear_layers(cfg)
    if args.names:
        print("\n".join(r["name"] for r in rows))
        return 0
    print(f"{args.model} as {cfg.model.task} (heads left out; --task to change)")
    print(f"{'name':<16} {'layers':>6}  {'in -> out':<16} {'parameters':>12}")
    for r in rows:
        shapes = sorted(r["shapes"].items(), key=lambda kv: -kv[1])
        first = f"{shapes[0][0][0]} -> {shapes[0][0][1]}" + (f" x{shapes[0][1]}" if len(shapes) > 1 else "")
        print(f"{r['name']:<16} {r['count']:>6}  {first:<16} {r['params']:>12,}  ({format_count(r['params'])})")
        for (n_in, n_out), n in shapes[1:]:
            print(f"{'':<16} {'':>6}  {f'{n_in} -> {n_out} x{n}':<16}")
    return 0


def cmd_presets(args) -> int:
    from loratui.core.presets import PRESET_NOTES, PRESETS

    for name, mods in PRESETS.items():
        print(f"{name:<14} {', '.join(mods):<62} {PRESET_NOTES.get(name, '')}")
    from loratui.train.models import ALIASES

    print()
    for name, alias in ALIASES.items():
        print(f"{name:<22} {alias.description}")
    return 0


def cmd_generate(args) -> int:
    _quiet_libraries()
    from loratui.train.generate import generate

    print(generate(args.model, " ".join(args.prompt), max_new_tokens=args.max_new_tokens,
                   allow_pickle=args.allow_pickle))
    return 0


def cmd_study(args) -> int:
    from loratui.core.study import is_study_file, load_study, parse_study

    if is_study_file(args.file):
        study = load_study(args.file)
    else:  # a plain run config: a study of one run, queued like any other
        study = parse_study({"base": str(Path(args.file).resolve())}, source=args.file)
    runs_dir = Path(args.runs_dir or os.environ.get("LORATUI_RUNS_DIR") or study.base.output.runs_dir).expanduser()
    print(f"study {study.name}: {len(study.runs)} runs")
    for p in study.runs:
        print(f"  {p.name:<40} {p.label}")
    if args.dry_run:
        return 0
    from loratui.core import compare
    from loratui.core.queue import RunQueue
    from loratui.core.runs import RunDir, stop_run

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    q = RunQueue(runs_dir)
    entries = q.add_study(study)
    print(f"queued in {q.path}")
    if args.detach:
        pid = q.ensure_runner(gpus)
        print(f"queue runner pid {pid}; watch it in the app (Queue) or: loratui queue --runs-dir {runs_dir}")
        return 0
    ids = {e.id for e in entries}
    seen: dict[str, str] = {}
    last_progress: dict[str, float] = {}
    import time

    try:
        while True:
            if q.runner_pid() is None:
                if q.claim_runner():
                    try:
                        q.step(gpus, echo=lambda line: None)
                    finally:
                        q.release_runner()
            state = q.read()
            mine = [e for e in state.entries if e.id in ids]
            for e in mine:
                if seen.get(e.id) != e.state:
                    seen[e.id] = e.state
                    if e.state == "running":
                        print(f"[{_now()}] {e.run}: running", flush=True)
                        last_progress[e.id] = time.monotonic()
                    elif e.state not in ("waiting",):
                        row = compare.read_run(runs_dir / e.run)
                        metric = compare.fmt_metric(row.metric_name, row.final_metric)
                        print(f"[{_now()}] {e.run}: {e.state}, {row.metric_name} {metric}, "
                              f"{compare.fmt_seconds(row.train_time_s)}", flush=True)
            for e in mine:  # a line every 30 s for a running run: where it is
                if e.state == "running" and time.monotonic() - last_progress.get(e.id, 0) >= PROGRESS_EVERY:
                    last_progress[e.id] = time.monotonic()
                    line = _progress_line(runs_dir / e.run)
                    if line:
                        print(f"[{_now()}] {e.run}: {line}", flush=True)
            if all(e.state not in ("waiting", "running") for e in mine):
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("interrupted: stopping this study's running runs (adapters saved) and dropping the waiting ones")
        for e in q.read().entries:
            if e.id in ids and e.state == "waiting":
                q.cancel(e.id)
            elif e.id in ids and e.state == "running":
                stop_run(RunDir(runs_dir / e.run))
        return 130
    if q.read().waiting:  # other runs queued meanwhile: a detached runner takes over
        q.ensure_runner(gpus)
    rows = compare.read_runs([runs_dir / e.run for e in q.read().entries if e.id in ids])
    print()
    print(compare.to_markdown(rows, title=f"study {study.name}"))
    if args.export:
        csv_path, md_path = compare.export(rows, args.export, title=f"study {study.name}", stem=study.name)
        print(f"exported {csv_path} and {md_path}")
    return 0 if all(r.state == "finished" for r in rows) else 1


#: seconds between progress lines of a running run in ``loratui study``
PROGRESS_EVERY = 30.0


def _progress_line(run_path: Path) -> str:
    """'step 40/150, loss 0.31, accuracy 0.92' for a running run ('' when it has not logged a step yet)."""
    from loratui.core.compare import ev_get
    from loratui.core.runs import RunDir

    step = total = loss = metric = None
    for ev in RunDir(run_path).events():
        kind = ev_get(ev, "kind")
        if kind == "step":
            step, total, loss = ev_get(ev, "step"), ev_get(ev, "max_steps"), ev_get(ev, "loss") or loss
        elif kind == "eval":
            metric = ev_get(ev, "accuracy") if ev_get(ev, "accuracy") is not None else ev_get(ev, "eval_loss")
            metric = ("accuracy" if ev_get(ev, "accuracy") is not None else "eval loss", metric)
    if step is None:
        return ""
    parts = [f"step {step}/{total}" if total else f"step {step}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if metric and metric[1] is not None:
        parts.append(f"{metric[0]} {metric[1]:.4f}")
    return ", ".join(parts)


def _now() -> str:
    from datetime import datetime

    return datetime.now().strftime("%H:%M:%S")


def cmd_queue(args) -> int:
    from loratui.core.queue import RunQueue

    from loratui.core.fmt import printable

    q = RunQueue(args.runs_dir or default_runs_dir())
    state = q.reconcile()  # runs that ended while no runner watched are recorded first
    pid = q.runner_pid()
    if args.start and state.waiting and pid is None:
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
        pid = q.ensure_runner(gpus)
        print(f"started the queue runner (pid {pid})")
    print(f"queue of {q.runs_dir}: runner {'pid ' + str(pid) if pid else 'not running'}")
    for e in state.entries:
        print(f"  {e.id}  {e.state:<9} {printable(e.run):<40} {printable(e.study or '')} {printable(e.label)}")
    if pid is None and state.waiting:
        print(f"{len(state.waiting)} waiting and no runner (it ended or was killed): start it with "
              "`loratui queue --start` (or p in the app's Queue)")
    return 0


def cmd_queue_runner(args) -> int:
    from loratui.core.queue import runner_main

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    return runner_main(args.runs_dir, gpus)


COMMANDS = {
    "train": cmd_train, "engine": cmd_engine, "runs": cmd_runs, "stop": cmd_stop, "merge": cmd_merge,
    "estimate": cmd_estimate, "layers": cmd_layers, "presets": cmd_presets, "generate": cmd_generate,
    "study": cmd_study, "queue": cmd_queue, "queue-runner": cmd_queue_runner,
}
