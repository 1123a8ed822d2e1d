"""The app on a real pseudo-terminal, ended the ways it happens: SIGHUP, SIGTERM, and a terminal that goes away
while SIGHUP is ignored (nohup). It exits, takes its helper process with it, and leaves a training engine (its own
session) running. See tests/FAULTS.md (item 10)."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


class AppOnPty:
    def __init__(self, cwd: Path, ignore_hup: bool = False):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "TEXTUAL_ANIMATIONS": "none",
               "LORATUI_RUNS_DIR": str(cwd / "runs")}

        def pre():  # as a login shell starts it (an engine run in this test process ignores SIGHUP, inherited)
            signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else signal.SIG_DFL)

        self.proc = subprocess.Popen([sys.executable, "-m", "loratui"], stdin=slave, stdout=slave, stderr=slave,
                                     cwd=cwd, env=env, start_new_session=True, close_fds=True, preexec_fn=pre)
        os.close(slave)
        self.seen = bytearray()
        self.closed = False
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        import select

        while not self.closed:  # never blocked in read: closing the master must really close it
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.seen += chunk

    def helper(self, timeout: float = 120.0) -> psutil.Process:
        """The helper process (the Setup form's estimate starts it)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    cmd = " ".join(child.cmdline())
                    if "spawn_main" in cmd:
                        return child
            except psutil.Error:
                pass
            assert self.proc.poll() is None, bytes(self.seen[-2000:])
            time.sleep(0.2)
        raise AssertionError("the helper process never started")

    def signals(self) -> str:
        """The app's signal dispositions, for a failure message."""
        try:
            st = Path(f"/proc/{self.proc.pid}/status").read_text()
            return " ".join(f"{k}={st.split(k + ':')[1].split()[0]}" for k in ("SigIgn", "SigBlk", "SigCgt"))
        except (OSError, IndexError):
            return "?"

    def exit_code(self, timeout: float) -> int:
        before = self.signals()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the app did not exit in {timeout:.0f}s (signals before: {before}; now "
                                 f"{self.signals()}); screen tail: {bytes(self.seen[-600:])!r}") from None

    def close_terminal(self) -> None:
        self.closed = True
        self.reader.join(5)
        os.close(self.master)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if not self.closed:
            self.closed = True
            self.reader.join(5)
            os.close(self.master)


def _gone(proc: psutil.Process, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "runs").mkdir()
    return tmp_path


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_signal_ends_the_app_and_its_helper(app_dir, sig):
    app = AppOnPty(app_dir)
    try:
        helper = app.helper()
        time.sleep(0.5)
        app.proc.send_signal(sig)
        assert app.exit_code(60) == 0  # generous: 2 shared cores under load
        assert _gone(helper), "the helper process was left behind"
    finally:
        app.cleanup()


def test_terminal_gone_with_sighup_ignored_exits_instead_of_spinning(app_dir):
    app = AppOnPty(app_dir, ignore_hup=True)
    try:
        helper = app.helper()
        time.sleep(0.5)
        app.close_terminal()  # the SSH session dropped; nohup kept SIGHUP away
        t0 = time.monotonic()
        app.proc.wait(20)
        assert time.monotonic() - t0 < 10
        assert _gone(helper)
    finally:
        app.cleanup()


def test_killed_app_still_takes_its_helper(app_dir):
    app = AppOnPty(app_dir)
    try:
        helper = app.helper()
        app.proc.kill()  # no handler runs: the helper notices its parent is gone
        app.proc.wait(10)
        assert _gone(helper, 15)
    finally:
        app.cleanup()


def test_engine_survives_the_app_hanging_up(app_dir, tiny_llama):
    from loratui.core import runs
    from loratui.core.config import RunConfig

    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "validation_fraction": 0.0,
                 "max_length": 64},
        "train": {"max_steps": 100000, "batch_size": 2, "logging_steps": 1, "save_steps": 100000},
        "output": {"runs_dir": str(app_dir / "runs"), "name": "bg"}})
    run = runs.create_run(cfg)
    pid = runs.launch_detached(run)
    app = AppOnPty(app_dir)
    try:
        app.helper()
        app.proc.send_signal(signal.SIGHUP)
        assert app.exit_code(60) == 0  # generous: 2 shared cores under load
        n = sum(e["kind"] == "step" for e in run.events())
        end = time.monotonic() + 120
        while time.monotonic() < end and sum(e["kind"] == "step" for e in run.events()) <= n + 2:
            time.sleep(0.2)
        assert sum(e["kind"] == "step" for e in run.events()) > n + 2, run.log_tail()  # still training
        assert run.state() == "running"
    finally:
        app.cleanup()
        runs.stop_run(run)
        try:
            runs.wait_for_state(run, timeout=120)
        finally:
            if psutil.pid_exists(pid) and run.state() == "running":
                os.kill(pid, signal.SIGKILL)


# -- out of memory: the Monitor's one-key retry ---------------------------------------------------------------------

@pytest.mark.usefixtures("utc", "quiet_monitor")
async def test_monitor_offers_one_key_retry_after_out_of_memory(runs, monkeypatch):
    from fixtures import host_app, screen_text, wait_until
    from loratui.core import retry
    from loratui.core.runs import RunDir
    from loratui.ui.screens.monitor import MonitorScreen

    launched = []
    monkeypatch.setattr(retry, "launch_detached", lambda run, resume=False, env=None: launched.append(resume) or 4242)
    run = RunDir(runs / "smollm2-bs64-oom")
    before = run.config().train
    app = host_app(lambda: MonitorScreen(run.path))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "failed", what="failed")
        assert "retries with half the micro-batch" in screen_text(app)
        await pilot.press("b")
        await pilot.pause()
    after = run.config().train
    assert launched == [run.latest_checkpoint() is not None]
    assert (after.batch_size, after.grad_accum) == (before.batch_size // 2, before.grad_accum * 2)


def test_a_run_ending_rings_the_bell_and_notifies_the_desktop(tmp_path, monkeypatch):
    """Issue 18: whichever screen is open, a run that finishes rings the bell and sends OSC 9 and OSC 777 (they
    travel over SSH to the user's terminal); LORATUI_NOTIFY=off sends nothing. Both apps run side by side, each on
    its own runs folder, so the wait for the notification is also the wait that the 'off' app stays quiet."""
    import json

    from fixtures import make_live_run, recorded_events

    events = [e for e in recorded_events() if e["kind"] in ("started", "step") and e.get("step", 0) <= 10]
    apps, live = {}, {}
    try:
        for notify in ("on", "off"):
            folder = tmp_path / notify
            (folder / "runs").mkdir(parents=True)
            monkeypatch.setenv("LORATUI_NOTIFY", notify)  # what this app's process inherits
            live[notify] = make_live_run(folder / "runs", "live", pid=os.getpid(), events=events)  # we hold its lock
            apps[notify] = AppOnPty(folder)
        end = time.monotonic() + 60
        while not all(b"Setup" in app.seen for app in apps.values()) and time.monotonic() < end:
            time.sleep(0.2)
        # the watcher has seen the run running: its first look starts in the app's on_mount, before the first frame
        # (where "Setup" shows), and takes milliseconds; 2 s is that look many times over
        time.sleep(2)
        for run in live.values():
            with open(run / "events.jsonl", "a") as fh:
                fh.write(json.dumps({"kind": "finished", "time": time.time(), "step": 10, "adapter": None}) + "\n")
        from loratui.core import identity

        for lock in list(identity._HELD.values()):
            lock.release()
        finished = time.monotonic()
        while b"\x1b]9;" not in apps["on"].seen and time.monotonic() < finished + 15:  # the watcher looks every 3 s
            time.sleep(0.2)
        while time.monotonic() < finished + 7:  # and 'off' has had two of those looks and more
            time.sleep(0.2)
        seen = bytes(apps["on"].seen)
        assert b"\x1b]9;loratui live: finished at step 10\x07" in seen
        assert b"\x1b]777;notify;loratui live;finished at step 10\x07" in seen
        assert seen.count(b"\x07") >= 3  # the two notifications' terminators and the bell
        quiet = bytes(apps["off"].seen)
        assert b"\x1b]9;" not in quiet and b"\x1b]777;" not in quiet
    finally:
        for app in apps.values():
            app.cleanup()


def test_an_app_hung_up_in_its_first_second_does_not_live_on(app_dir):
    """Issue 15 item 11: tmux killed (an SSH connection dropping) while the app is still starting; the app used to
    sleep on with no terminal, deaf to SIGHUP and SIGTERM. It now ends within a few seconds, every time."""
    import shutil
    import uuid

    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    cmd = f"cd {app_dir} && LORATUI_RUNS_DIR={app_dir / 'runs'} exec {sys.executable} -m loratui"
    for delay in (0.8, 1.0, 1.2):
        name = f"lt-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24", cmd], check=True)
        pane = subprocess.run(["tmux", "list-panes", "-t", name, "-F", "#{pane_pid}"], capture_output=True,
                              text=True).stdout.split()
        app = [psutil.Process(int(p)) for p in pane]  # exec: the pane's process is the app itself
        assert app, "no tmux pane"
        time.sleep(delay)
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)
        for proc in app:
            assert _gone(proc, 10), f"the app (pid {proc.pid}) lived on after its terminal went ({delay}s)"
