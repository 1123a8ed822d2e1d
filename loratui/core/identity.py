"""A run's engine: which process it is, proven, and the lock that makes it the only one.

One engine per run. Every engine (the single process, or the supervisor of several under torchrun) holds an exclusive
``flock`` on ``runs/<name>/engine.lock`` for as long as it lives; the kernel releases it when the process dies, however
it dies. A launcher (``loratui train --detach``, the app, the queue runner) takes the lock *before* it starts the
engine and hands the open file to it, so two launches at once cannot both start: the second is told
"NAME is already running (pid N)" and the run folder is left as it was.

Proof of identity, for stop, checkpoint-now and liveness: a pid is this run's engine only when the process lives,
started when the record says, and holds the run's lock file open while the lock is held. status.json and launch.json
only *name* a candidate; copying another process's pid, start time and command line into them proves nothing, since
no file can make a stranger hold our lock.

Light module (psutil only).
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import psutil

from loratui.core.errors import RunError
from loratui.core.fold_state import START_TIME_SLACK  # how well a process's start time is known

LOCK_NAME = "engine.lock"
#: the environment variable that hands a launcher's lock to the engine it started (an inherited file descriptor)
LOCK_FD_ENV = "LORATUI_RUN_LOCK_FD"
#: how long a taker retries: a reader's probe holds the lock for a moment
_ACQUIRE_RETRY_S = 1.0

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; loratui's engine needs a POSIX system
    fcntl = None  # type: ignore[assignment]


# -- processes -------------------------------------------------------------------------------------------------------


def process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None


def process_identity(pid: int | None = None) -> dict:
    """pid, start time and command line of this process (or ``pid``): what status.json and launch.json record."""
    try:
        proc = psutil.Process(pid or os.getpid())
        with proc.oneshot():
            return {"pid": proc.pid, "pid_started": proc.create_time(), "cmdline": proc.cmdline()}
    except (psutil.Error, ValueError, OverflowError):
        return {"pid": pid or os.getpid(), "pid_started": None, "cmdline": None}


def pid_alive(pid: int | None, started: float | None = None) -> bool:
    """True if ``pid`` (> 1) runs, is not a zombie and (when known) started at ``started`` (no identity check)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not started or abs(proc.create_time() - started) <= START_TIME_SLACK
    except (psutil.Error, ValueError, OverflowError):
        return False


def _loratui_token(token: str) -> bool:
    base = os.path.basename(token)
    return base == "loratui" or token in ("loratui.cli", "loratui.__main__") or token.endswith(
        ("loratui/__main__.py", "loratui/cli.py"))


def names_run(cmdline: list[str], run_path: Path, cwd: str | None = None) -> bool:
    """True when ``cmdline`` runs loratui's engine for ``run_path``: ``... loratui engine RUN`` (directly, through
    ``python -m loratui``, or under ``torchrun``/``torch.distributed.run``) or ``loratui train --resume RUN``.
    A hint for humans and the supervisor's rank finder, never proof (see :func:`engine_process`)."""
    target = _resolved(run_path, None)

    def same(arg: str) -> bool:
        return _resolved(Path(arg), cwd) == target

    for i, token in enumerate(cmdline[:-1]):
        if not _loratui_token(token):
            continue
        rest = cmdline[i + 1:]
        args = [a for a in rest[1:] if not a.startswith("-")]
        if rest[0] == "engine" and args and same(args[0]):
            return True
        if rest[0] == "train":
            for j, a in enumerate(rest):
                if a == "--resume" and j + 1 < len(rest) and same(rest[j + 1]):
                    return True
                if a.startswith("--resume=") and same(a.split("=", 1)[1]):
                    return True
    return False


def _resolved(path: Path, cwd: str | None) -> str:
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = Path(cwd or os.getcwd()) / path
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.normpath(str(path))


# -- the lock --------------------------------------------------------------------------------------------------------


def lock_path(run_path: Path) -> Path:
    return Path(run_path) / LOCK_NAME


def _key(run_path: Path) -> str:
    return os.path.realpath(lock_path(run_path))


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class RunBusy(RunError):
    """Another engine holds the run."""

    def __init__(self, run_path: Path, pid: int | None):
        self.pid = pid
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"{Path(run_path).name} is already running{who}", field="run",
                         hint=f"watch it with: loratui, or stop it first: loratui stop {Path(run_path).name}")


#: the locks this process holds, by lock file: a second taker in the same process gets the same lock
_HELD: dict[str, "RunLock"] = {}


class RunLock:
    """The exclusive lock on one run folder, held through an open file descriptor."""

    def __init__(self, run_path: Path, fd: int):
        self.run_path = Path(run_path)
        self.fd = fd
        _HELD[_key(run_path)] = self

    @classmethod
    def acquire(cls, run_path: Path) -> "RunLock":
        """Take the run's lock or raise :class:`RunBusy` naming the holder; a folder that can't be written is one
        :class:`RunError` line."""
        path = lock_path(run_path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise RunError(f"cannot lock the run {Path(run_path).name}: {err.strerror or err} ({path})", field="run",
                           hint="the runs folder must be writable: check its permissions, or use --runs-dir") from None
        end = time.monotonic() + _ACQUIRE_RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or time.monotonic() > end:
                    pid = recorded_holder(run_path)
                    os.close(fd)
                    if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise RunBusy(run_path, pid) from None
                    raise RunError(f"cannot lock the run {Path(run_path).name}: {err.strerror or err}",
                                   field="run") from None
                time.sleep(0.02)
        lock = cls(run_path, fd)
        lock.record(os.getpid())
        return lock

    @classmethod
    def adopt(cls, run_path: Path) -> "RunLock":
        """The engine's lock: the one its launcher handed over (``LORATUI_RUN_LOCK_FD``, checked to be this run's
        lock file and held), or a fresh one taken now."""
        held = _HELD.get(_key(run_path))
        if held is not None and held.fd >= 0:
            return held
        raw = os.environ.pop(LOCK_FD_ENV, None)
        if raw and raw.isdigit():
            fd = int(raw)
            try:
                st = os.fstat(fd)
                mine = _file_id(lock_path(run_path)) == (st.st_dev, st.st_ino)
            except OSError:
                mine = False
            if mine:
                try:  # the launcher's lock: an open file description it shares with us, already ours
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.set_inheritable(fd, False)
                    lock = cls(run_path, fd)
                    lock.record(os.getpid())
                    return lock
                except OSError:
                    pass
        return cls.acquire(run_path)

    def record(self, pid: int) -> None:
        """Write the holder's pid into the lock file: what "already running (pid N)" says; never proof."""
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{pid}\n".encode(), 0)
        except OSError:
            pass

    def hand_over(self) -> tuple[dict, tuple[int, ...]]:
        """(environment, pass_fds) for the engine process this lock's holder starts."""
        return {LOCK_FD_ENV: str(self.fd)}, (self.fd,)

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)  # closing our descriptor; a child that inherited it keeps the lock
            except OSError:
                pass
            self.fd = -1
        if _HELD.get(_key(self.run_path)) is self:
            del _HELD[_key(self.run_path)]

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def recorded_holder(run_path: Path) -> int | None:
    """The pid the lock file names (what its holder wrote): for messages only."""
    try:
        text = lock_path(run_path).read_text()[:32].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def lock_held(run_path: Path) -> bool:
    """True when some process holds the run's lock (probed without waiting: a shared lock taken and dropped)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_path(run_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def holds_open(pid: int, path: Path) -> bool:
    """True when process ``pid`` has ``path`` (that very file: device and inode) open."""
    want = _file_id(path)
    if want is None:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    if fd_dir.is_dir():
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return False  # another user's process: nothing is proven
        for name in names:
            if _file_id(fd_dir / name) == want:
                return True
        return False
    try:  # no /proc (macOS): psutil lists the regular files a process has open
        return any(_file_id(Path(f.path)) == want for f in psutil.Process(pid).open_files())
    except (psutil.Error, OSError):
        return False


def engine_process(run_path: Path, pid: Any, started: Any = None) -> psutil.Process | None:
    """The process ``pid`` when it is proven to be this run's engine, else None.

    Proof: pid > 1; the process lives (not a zombie); its start time matches the recorded one when there is one; the
    run's lock is held; and this process holds the lock file open. The recorded command line is not asked for: it
    can be copied into a file, an open lock cannot."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            created = proc.create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None
    if isinstance(started, (int, float)) and not isinstance(started, bool) and abs(created - started) > START_TIME_SLACK:
        return None  # the pid was reused
    if not lock_held(run_path) or not holds_open(pid, lock_path(run_path)):
        return None
    return proc
