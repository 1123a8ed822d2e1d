"""Time from process start to the first frame of ``loratui`` on a real (pseudo-)terminal.

Starts ``python -m loratui`` (no sub-command: the app on the SmolLM2 demo config) in an 80x24 pty, reads what it
writes and notes two moments, measured from just before the process is spawned:

- ``first paint``: the first frame reaches the terminal (the header's title is on it);
- ``form shown``: the first field of the Setup form ("Base model") is on screen.

Then it sends ctrl+q and waits for the app to exit. Not a timed test: a benchmark to run by hand.

    .venv/bin/python bench/first_frame.py            # 7 runs, prints each and the medians
    .venv/bin/python bench/first_frame.py --runs 3 --size 120x40
    git archive b6b7f37 | tar -x -C /tmp/base && .venv/bin/python bench/first_frame.py --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TITLE = b"loratui"
FORM = b"Base model"


def one_run(size: tuple[int, int], repo: Path = REPO, timeout: float = 30.0) -> tuple[float | None, float | None]:
    cols, rows = size
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "TEXTUAL_ANIMATIONS": "none",
           "PYTHONPATH": str(repo)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "loratui"], stdin=slave, stdout=slave, stderr=slave, cwd=repo,
                            env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    seen = b""
    first_paint = form = None
    try:
        while time.perf_counter() - t0 < timeout and form is None:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            now = time.perf_counter() - t0
            seen += chunk
            if first_paint is None and TITLE in seen:
                first_paint = now
            if FORM in seen:
                form = now
        os.write(master, b"\x11")  # ctrl+q
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    os.read(master, 65536)
                except OSError:
                    break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        os.close(master)
    return first_paint, form


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--size", default="80x24", help="COLSxROWS of the pseudo-terminal")
    ap.add_argument("--baseline", type=Path, help="another checkout (e.g. `git archive REV | tar -x -C DIR`): its "
                    "runs alternate with this tree's, so both see the same machine load")
    args = ap.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))
    trees = {"this tree": REPO}
    if args.baseline:
        trees = {"baseline": args.baseline.resolve(), **trees}
    for repo in trees.values():
        one_run((cols, rows), repo)  # warm the file cache and the .pyc files; not counted
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in trees}
    for i in range(args.runs):
        for name, repo in trees.items():
            paint, form = one_run((cols, rows), repo)
            print(f"{name} run {i + 1}: first paint {paint if paint is None else f'{paint:.3f}'} s, "
                  f"form shown {form if form is None else f'{form:.3f}'} s", flush=True)
            if paint is not None:
                results[name][0].append(paint)
            if form is not None:
                results[name][1].append(form)
    for name, (paints, forms) in results.items():
        for what, xs in (("first paint", paints), ("form shown ", forms)):
            if xs:
                print(f"{name}: median {what} {statistics.median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f})")


if __name__ == "__main__":
    main()
