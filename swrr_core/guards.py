"""Process guards shared by both stages: one writer per output, children that die with their parent.

    with OutputLock(out_path, "swrr-extract"):    # refuses if another live process holds it
        ...
    die_with_parent()                             # in a worker process's initializer

`OutputLock` takes a POSIX record lock (`fcntl.lockf`) on `<path>.lock`. The kernel drops it when
the holding process exits, however it exits (SIGKILL included), and a forked child does not
inherit it, so a stray DataLoader worker can never keep an output locked. The file holds the
holder's pid, only so that the refusal can name it; the file itself is left in place (deleting
it while another process waits on it would let two processes lock two different files).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

LOCK_SUFFIX = ".lock"


class LockHeld(Exception):
    """Another live process holds the lock; the message names it and the output."""

    def __init__(self, message: str, pid: Optional[int]):
        super().__init__(message)
        self.pid = pid


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


class OutputLock:
    """An exclusive, non-blocking lock on `<path>.lock` for the life of a job writing `path`.

    `what` names the kind of job in the refusal ("another swrr-extract (pid 123) is writing X").
    Raises LockHeld when another process holds it, OSError when the lock file cannot be created.
    """

    def __init__(self, path, what: str):
        self.path = Path(path)
        self.what = what
        self.file = lock_path(self.path)
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        import fcntl

        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"{self.what} (pid {holder})" if holder else self.what
            raise LockHeld(f"another {who} is writing {self.path}; wait for it to finish or stop it "
                           f"(the lock is {self.file})", holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> Optional[int]:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def die_with_parent() -> None:
    """Make this (child) process end when its parent does, even after a SIGKILL of the parent.

    On Linux the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); elsewhere a
    daemon thread polls the parent's pid once a second. Call it first thing in a worker process.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), name="swrr-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
