"""Time from process start to the first frame of ``loratui`` on a real (pseudo-)terminal.

Starts ``python -m loratui`` (no sub-command: the app on the SmolLM2 demo config) in an 80x24 pty, reads what it
writes and notes two moments, measured from just before the process is spawned:

- ``first paint``: the first frame reaches the terminal (the header's title is on it);
- ``form shown``: the first field of the Setup form ("Base model") is on screen.

Then it sends ctrl+q and waits for the app to exit. Not a timed test: a benchmark to run by hand.

    .venv/bin/python bench/first_frame.py            # 7 runs, prints each and the medians
    .venv/bin/python bench/first_frame.py --runs 3 --size 120x40
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


def one_run(size: tuple[int, int], timeout: float = 30.0) -> tuple[float | None, float | None]:
    cols, rows = size
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "TEXTUAL_ANIMATIONS": "none"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "loratui"], stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
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
    args = ap.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))
    one_run((cols, rows))  # warm the file cache and the .pyc files; not counted
    paints, forms = [], []
    for i in range(args.runs):
        paint, form = one_run((cols, rows))
        print(f"run {i + 1}: first paint {paint if paint is None else f'{paint:.3f}'} s, "
              f"form shown {form if form is None else f'{form:.3f}'} s", flush=True)
        if paint is not None:
            paints.append(paint)
        if form is not None:
            forms.append(form)
    if paints:
        print(f"median first paint {statistics.median(paints):.3f} s (min {min(paints):.3f}, max {max(paints):.3f})")
    if forms:
        print(f"median form shown  {statistics.median(forms):.3f} s (min {min(forms):.3f}, max {max(forms):.3f})")


if __name__ == "__main__":
    main()
