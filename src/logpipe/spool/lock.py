"""The ``replay.lock`` of a spool directory: one replaying process at a time."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .. import durable
from .segments import LOCK_NAME

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per spool, no locking
    fcntl = None  # type: ignore[assignment]

__all__ = ["DirectoryLock"]


class DirectoryLock:
    """The ``replay.lock`` of a spool directory: one replaying process at a time.

    `acquire` never blocks. A forked child inherits the parent's lock; it must
    call `after_fork`, which forgets it without releasing it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        durable.make_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), durable.FILE_MODE)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the process that holds (or last held) the lock."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def after_fork(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # not LOCK_UN: that would release the parent's lock too
