"""Durable file writes: the few ways logpipe puts bytes on disk so that a crash cannot lose or tear them.

Why one module: the tail registry, the spool's offset files, and the
dead-letter files of ``tail``, ``ship`` and the Elasticsearch exporter all
need the same steps in the same order (write everything, fsync, and for a
replacement rename and fsync the directory). Written out once, a fix to
one of those steps reaches every caller.

Files are created with mode 0600 and directories with 0700 (before the
umask): spools, registries and dead letters hold log data, which holds what
applications should not have logged; only the user that runs logpipe reads them. Errors are raised as
`OSError` to the caller, except where noted: an fsync of a directory is
best effort, since some file systems refuse to open or sync one.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "append", "fsync_dir", "make_dirs", "replace", "write_all"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_all(fd: int, data: bytes) -> None:
    """Write all of *data* to *fd*: ``os.write`` may write less than it is given (pipes, signals, full disks)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append(path: Path, data: bytes) -> None:
    """Append *data* to *path* (one ``write`` unless the kernel takes less) and fsync it, creating file and parents.

    For dead letters: the only copy of what they hold, so they are on disk
    before anyone counts them as handled. O_APPEND keeps concurrent writers'
    appends whole.
    """
    make_dirs(path.parent)
    _write_synced(path, os.O_APPEND | os.O_CREAT, data)


def replace(path: Path, data: bytes, temp: Path) -> None:
    """Replace *path* with *data* atomically and durably, by way of the file *temp* in the same directory.

    The temp file is written and fsynced, renamed over *path*, then the
    directory is fsynced (so the rename itself survives a crash): a reader
    sees the old or the new content, never half of one. The caller picks
    *temp*, since whether several threads or processes may replace the same
    file at once decides how unique its name must be.
    """
    _write_synced(temp, os.O_CREAT | os.O_TRUNC, data)
    os.replace(temp, path)
    fsync_dir(path.parent)


def _write_synced(path: Path, flags: int, data: bytes) -> None:
    """Open *path* for writing with *flags*, write all of *data*, fsync, close (also when a step fails)."""
    fd = os.open(path, os.O_WRONLY | flags, FILE_MODE)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """Create *directory* (mode 0700) and its missing parents; an existing one is left as it is."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def fsync_dir(directory: Path) -> None:
    """Fsync *directory* so that names created or renamed in it survive a crash; best effort, never raises."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
