"""tokens/s of one run headless against the same run watched live by the app (issue 10: at least 98%).

Headless: `loratui train CONFIG` in the foreground. Watched: the same config started with `loratui train --detach`
(what the app's launch does), then the app in an 80x24 pseudo-terminal, F4 (Runs) and Enter: the Monitor attached
to the run, its loss chart, GPU panel (NVML) and log updating until the run ends. The screen's bytes are read and
checked for the run's name and its tokens/s line, so the Monitor really was on screen. Sides alternate
(headless, watched, headless, watched) on one warm card; tokens/s: real tokens over steps 10..N from the run's events.

    python bench/app_attached.py --shape 1b --steps 60 --batch 16 --pairs 2
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import loratui_config, run_events, window  # noqa: E402
from gpu_engine import workspace  # noqa: E402

F4, ENTER, CTRL_Q = b"\x1bOS", b"\r", b"\x11"


def rate(run_dir: Path) -> float | None:
    steps = [e for e in run_events(run_dir) if e.get("kind") == "step"]
    return window([(e["step"], e["elapsed"], e["tokens_seen"]) for e in steps])


def config(args, model_dir: Path, data: Path, runs: Path, name: str) -> Path:
    cfg = loratui_config(args, model_dir, data, runs, name, "default")
    import shutil

    shutil.rmtree(runs / name, ignore_errors=True)  # a run of an earlier call on this machine
    path = Path("/tmp/bench-work") / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def headless(args, model_dir, data, out: Path, i: int) -> float | None:
    runs = Path("/tmp/bench-work/app-runs-headless")
    name = f"headless-{i}"
    cfg = config(args, model_dir, data, runs, name)
    with open(out / f"{name}.log", "w") as fh:
        subprocess.run([sys.executable, "-m", "loratui", "train", str(cfg)], stdout=fh, stderr=subprocess.STDOUT,
                       timeout=args.timeout, check=False)
    return rate(runs / name)


def detached(args, model_dir, data, out: Path, i: int) -> float | None:
    """The engine started as the app starts it (`--detach`, its own session), nobody watching."""
    runs = Path("/tmp/bench-work") / f"app-runs-detached-{i}"
    name = f"detached-{i}"
    cfg = config(args, model_dir, data, runs, name)
    subprocess.run([sys.executable, "-m", "loratui", "train", str(cfg), "--detach"], check=True,
                   stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.timeout:
        if any(e["kind"] in ("finished", "failed", "stopped") for e in run_events(runs / name)):
            break
        time.sleep(0.5)
    return rate(runs / name)


def watched(args, model_dir, data, out: Path, i: int) -> tuple[float | None, dict]:
    runs = Path("/tmp/bench-work") / f"app-runs-{i}"  # one run in the folder: Enter on Runs opens it
    name = f"watched-{i}"
    cfg = config(args, model_dir, data, runs, name)
    subprocess.run([sys.executable, "-m", "loratui", "train", str(cfg), "--detach"], check=True,
                   stdout=subprocess.DEVNULL)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "TEXTUAL_ANIMATIONS": "none"}
    app = subprocess.Popen([sys.executable, "-m", "loratui", "--runs-dir", str(runs)], stdin=slave, stdout=slave,
                           stderr=slave, env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    seen = bytearray()
    import psutil

    app_cpu: dict = {}
    watch = psutil.Process(app.pid)
    sent: list[tuple[float, bytes]] = []
    t0 = time.monotonic()
    plan = [(4.0, F4), (7.0, ENTER)]  # after the first frame: Runs, then open the run in the Monitor
    after_enter = 0
    try:
        while time.monotonic() - t0 < args.timeout:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                seen += chunk
                if sent and sent[-1][1] == ENTER:
                    after_enter += len(chunk)
            now = time.monotonic() - t0
            if plan and now >= plan[0][0]:
                os.write(master, plan[0][1])
                sent.append((now, plan[0][1]))
                plan.pop(0)
            state = [e["kind"] for e in run_events(runs / name)]
            if any(k in ("finished", "failed", "stopped") for k in state):
                time.sleep(2)
                break
            try:  # the app's CPU time (its helper process included) while it watches
                procs = [watch, *watch.children(recursive=True)]
                app_cpu["s"] = sum(sum(p.cpu_times()[:2]) for p in procs)
                app_cpu["wall"] = time.monotonic() - t0
                if "watch_s" not in app_cpu and sent and sent[-1][1] == ENTER and now - sent[-1][0] >= 2:
                    # the Monitor is up: from here on the app only watches (start-up and first frames excluded)
                    app_cpu["watch_s"], app_cpu["watch_wall"] = app_cpu["s"], app_cpu["wall"]
            except psutil.Error:
                pass
        os.write(master, CTRL_Q)
        app.wait(20)
    except Exception:  # noqa: BLE001
        app.kill()
    text = bytes(seen)
    cpu = app_cpu.get("s")
    (out / f"{name}.screen").write_bytes(text)
    proof = {"run_name_on_screen": name.encode() in text, "tok_s_on_screen": b"tok/s" in text,
             "bytes_after_enter": after_enter,
             "app_cpu_share": round(cpu / app_cpu["wall"], 3) if cpu and app_cpu.get("wall") else None,
             "app_cpu_share_watching": round((cpu - app_cpu["watch_s"]) / (app_cpu["wall"] - app_cpu["watch_wall"]), 3)
             if cpu and "watch_s" in app_cpu and app_cpu["wall"] > app_cpu["watch_wall"] else None}
    return rate(runs / name), proof


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--tokenizer", default=".gpu/tokenizer")
    args = ap.parse_args()
    out, _, model_dir, data = workspace(args.shape, args.tokenizer)
    rows = []
    for i in range(args.pairs):
        h = headless(args, model_dir, data, out, i)
        d = detached(args, model_dir, data, out, i)
        w, proof = watched(args, model_dir, data, out, i)
        rows.append({"pair": i, "headless_tokens_per_s": h, "detached_tokens_per_s": d, "watched_tokens_per_s": w,
                     **proof})
        print(json.dumps(rows[-1]), flush=True)
    (out / "results-app-attached.json").write_text(json.dumps(rows, indent=1))
    hs = [r["headless_tokens_per_s"] for r in rows if r["headless_tokens_per_s"]]
    ws = [r["watched_tokens_per_s"] for r in rows if r["watched_tokens_per_s"]]
    if hs and ws:
        print(f"headless mean {sum(hs) / len(hs):,.0f} tok/s, watched mean {sum(ws) / len(ws):,.0f} tok/s: "
              f"{100 * (sum(ws) / len(ws)) / (sum(hs) / len(hs)):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
