"""Commands of the queue: ``study``, ``queue``, ``queue-runner`` (internal)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from loratui.commands.common import default_runs_dir


def register(sub) -> None:
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
    for name, func in (("study", cmd_study), ("queue", cmd_queue), ("queue-runner", cmd_queue_runner)):
        sub.choices[name].set_defaults(func=func)


def cmd_study(args) -> int:
    from loratui.core.study import is_study_file, load_study, parse_study

    if is_study_file(args.file):
        study = load_study(args.file)
    else:  # a plain run config: a study of one run, queued like any other
        study = parse_study({"base": str(Path(args.file).resolve())}, source=args.file)
    from loratui.core.queue import RunQueue

    runs_dir = Path(args.runs_dir or os.environ.get("LORATUI_RUNS_DIR") or study.base.output.runs_dir).expanduser()
    q = RunQueue(runs_dir)
    print(f"study {study.name}: {len(study.runs)} runs")
    if args.dry_run:  # the names queuing it now would give (-2, -3 ... where the runs folder holds one already)
        names = q.planned_names(study)
        for p, name in zip(study.runs, names):
            print(f"  {name:<40} {p.label}")
        taken = sum(name != p.name for p, name in zip(study.runs, names))
        if taken:
            print(f"{taken} planned name{' is' if taken == 1 else 's are'} taken in {runs_dir}: "
                  "those runs get -2, -3 ... (as listed)")
        return 0
    from loratui.core import compare
    from loratui.core.queue import held_text
    from loratui.core.queue_runner import step
    from loratui.core.runs import RunDir, stop_run

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    entries = q.add_study(study)
    for e in entries:
        print(f"  {e.run:<40} {e.label}")
    print(f"queued in {q.path}")
    if args.detach:
        pid = q.ensure_runner(gpus)
        print(f"queue runner pid {pid}; watch it in the app (Queue) or: loratui queue --runs-dir {runs_dir}")
        print(f"compare its runs, done or not: loratui compare --study {shlex.quote(study.name)} "
              f"--runs-dir {shlex.quote(str(runs_dir))}")
        return 0
    ids = {e.id for e in entries}
    seen: dict[str, str] = {}
    told: dict[str, str] = {}  # entry id -> why it waits, as last printed
    last_progress: dict[str, float] = {}
    import time

    try:
        while True:
            if q.runner_pid() is None:
                if q.claim_runner():
                    try:
                        step(q, gpus, echo=lambda line: None)
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
                        margin = row.rewards.get("rewards/margins")  # a preference run's (issue 20)
                        margin = f", margin {margin:+.3f}" if margin is not None else ""
                        print(f"[{_now()}] {e.run}: {e.state}, {row.metric_name} {metric}{margin}, "
                              f"{compare.fmt_seconds(row.train_time_s)}", flush=True)
            for e in mine:  # runs outside the queue hold it back: said once, again when that changes
                held = held_text(e.held_by) if e.state == "waiting" else ""
                if held and told.get(e.id) != held:
                    print(f"[{_now()}] {e.run}: {held}", flush=True)
                told[e.id] = held
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

    step = total = loss = metric = margin = None
    for ev in RunDir(run_path).events():
        kind = ev_get(ev, "kind")
        if kind == "step":
            step, total, loss = ev_get(ev, "step"), ev_get(ev, "max_steps"), ev_get(ev, "loss") or loss
            margin = ev_get(ev, "rewards/margins") if ev_get(ev, "rewards/margins") is not None else margin
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
    if isinstance(margin, (int, float)):  # a preference run's newest step (issue 20)
        parts.append(f"margin {margin:+.3f}")
    return ", ".join(parts)


def _now() -> str:
    from datetime import datetime

    return datetime.now().strftime("%H:%M:%S")


def cmd_queue(args) -> int:
    from loratui.core.fmt import printable
    from loratui.core.queue import RunQueue, held_text

    q = RunQueue(args.runs_dir or default_runs_dir())
    state = q.reconcile()  # runs that ended while no runner watched are recorded first
    pid = q.runner_pid()
    if args.start and state.waiting and pid is None:
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
        pid = q.ensure_runner(gpus)
        print(f"started the queue runner (pid {pid})")
    print(f"queue of {q.runs_dir}: runner {'pid ' + str(pid) if pid else 'not running'}")
    for e in state.entries:
        print(f"  {e.id}  {e.shown_state:<9} {printable(e.run):<40} {printable(e.study or '')} {printable(e.label)}")
        if pid and e.state == "waiting" and e.held_by:  # the runner's word: outside runs hold its cards
            print(f"         {held_text([printable(n) for n in e.held_by], 71)}")
    if pid is None and state.waiting:
        print(f"{len(state.waiting)} waiting and no runner (it ended or was killed): start it with "
              "`loratui queue --start` (or p in the app's Queue)")
    return 0


def cmd_queue_runner(args) -> int:
    from loratui.core.queue_runner import runner_main

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    return runner_main(args.runs_dir, gpus)
