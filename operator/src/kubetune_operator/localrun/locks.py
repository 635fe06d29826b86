"""Exclusive locks that keep two `kubetune run`s off one work folder or one local output.

Each lock is `flock` on a file that holds the holder's PID, so a refused run can say who holds it.
The kernel drops a lock when its last descriptor closes, so a run that dies leaves no stale lock;
the runner hands its descriptors to the steps it starts, which keeps a folder locked until a step
stopping after its runner died (a checkpoint being written) is done with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from kubetune_operator.errors import UserError


class Busy(UserError):
    """Another run holds the lock."""


class Locks:
    def __init__(self) -> None:
        self._fds: list[int] = []

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(self._fds)

    def take(self, path: Path, what: str, hint: str) -> None:
        """Lock `path` (created if missing) or raise Busy naming `what`, the holder's PID and `hint`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise Busy(f"{what} is in use by another kubetune run (PID {holder}); {hint}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fds.append(fd)

    def release(self) -> None:
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
