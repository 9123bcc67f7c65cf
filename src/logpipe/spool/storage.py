"""Spool storage: segments appended by writers, read and committed by the replayer, within a size cap.

See the package docstring (`logpipe.spool`) for the layout on disk and the
guarantees. `Spool` is one directory; it knows nothing about where records go
next (that is `logpipe.spool.replay`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .. import durable
from ..deadletter import DeadLetter, FileDeadLetters
from ..report import Reporter
from .segments import (
    REJECTED_FILE,
    SEGMENT_SUFFIX,
    Chunk,
    count_lines,
    is_segment,
    read_lines,
    read_offset,
    remove_segment,
    size,
    write_offset,
    written_elsewhere,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per spool, no locking
    fcntl = None  # type: ignore[assignment]

__all__ = ["FsyncPolicy", "FullPolicy", "Spool", "SpoolStats", "report"]

#: What an append does when the spool is at ``max_bytes``; see the module docstring.
FullPolicy = Literal["drop_oldest", "drop_newest"]
#: When appended data is forced to disk: never (the OS decides), batch (every append), interval.
FsyncPolicy = Literal["never", "batch", "interval"]

#: How often a writer re-measures the directory (other processes write and delete there too).
_RESCAN_SECONDS = 5.0


@dataclass(frozen=True)
class SpoolStats:
    """Counters of one spool, as of one moment.

    ``written``, ``replayed``, ``dropped``, ``torn`` and ``rejected`` count
    records handled by this process since it opened the spool;
    ``pending_bytes`` and ``segments`` describe what the directory holds now,
    whoever wrote it.
    """

    written: int
    replayed: int
    dropped: int
    torn: int
    rejected: int
    pending_bytes: int
    segments: int


class Spool:
    """One spool directory: appends from this process, reads and commits for the replayer.

    Thread-safe. Appending and reading may happen in different processes at
    once; see the module docstring for how they stay out of each other's way.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        full: FullPolicy = "drop_oldest",
        fsync: FsyncPolicy = "batch",
        fsync_interval: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes))
        self.full = full
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        #: Called after every successful append (the replayer's wake-up).
        self.on_append: Callable[[], None] | None = None
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0
        self._seq = itertools.count()
        self._last_ns = 0
        self._estimate: int | None = None
        self._scanned_at = 0.0
        self._synced_at: float | None = None
        self._dirty = False
        self._written = self._replayed = self._dropped = self._torn = self._rejected = 0

    # -- writing -------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> int:
        """Append *payloads* as lines with one ``write``; returns how many were accepted.

        Returns 0 when the ``drop_newest`` policy (or a spool too small for the
        batch) refused them; they are counted as ``dropped``. Raises `OSError`
        when the disk fails, in which case nothing was accepted.
        """
        if not payloads:
            return 0
        data = b"".join([p + b"\n" for p in payloads])
        with self._lock:
            if not self._make_room(len(data)):
                self._dropped += len(payloads)
                return 0
            try:
                fd = self._writable(len(data))
            except OSError as exc:
                raise _naming(exc, self.directory) from None
            target = self._active
            try:
                durable.write_all(fd, data)
            except OSError as exc:
                # A full disk takes part of the write: cut it off, so that no record of a batch
                # counted as not accepted is replayed anyway, and no torn line is left behind.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._active_size)
                self._roll()  # a partial line must end a segment, never precede the next write
                raise _naming(exc, target or self.directory) from None
            self._active_size += len(data)
            self._estimate = (self._estimate or 0) + len(data)
            self._written += len(payloads)
            self._dirty = True
            self._maybe_fsync(fd)
        if self.on_append is not None:
            self.on_append()
        return len(payloads)

    def flush(self) -> None:
        """Force what was appended to disk (whatever the fsync policy)."""
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def close(self) -> None:
        """Flush and close the open segment; later appends open a new one."""
        with self._lock:
            self._roll()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's open segment and counters.

        The inherited descriptor is closed without unlocking: the lock belongs
        to the parent's open file, which the parent keeps writing.
        """
        fd = self._fd
        self._init_process_state()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _writable(self, incoming: int) -> int:
        if self._fd is not None and self._active_size and self._active_size + incoming > self.segment_bytes:
            self._roll()
        if self._fd is None:
            self._open_segment()
        assert self._fd is not None
        return self._fd

    def _open_segment(self) -> None:
        """Create a segment, lock it, then give it its name (so no reader sees it unlocked)."""
        durable.make_dirs(self.directory)
        ns = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = ns
        name = f"{ns:020d}-{os.getpid()}-{next(self._seq):06d}{SEGMENT_SUFFIX}"
        temp = self.directory / f".{name}.new"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temp, flags, durable.FILE_MODE)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        final = self.directory / name
        os.rename(temp, final)
        durable.fsync_dir(self.directory)
        self._fd, self._active, self._active_size = fd, final, 0

    def _roll(self) -> None:
        """Close the open segment; the replayer may delete it once it is delivered."""
        fd, self._fd, self._active = self._fd, None, None
        if fd is None:
            return
        try:
            if self._dirty and self.fsync != "never":
                os.fsync(fd)
        except OSError:
            pass
        finally:
            self._dirty = False
            os.close(fd)  # also releases the flock

    def _maybe_fsync(self, fd: int) -> None:
        if self.fsync == "batch":
            os.fsync(fd)
            self._dirty = False
        elif self.fsync == "interval":
            now = time.monotonic()
            if self._synced_at is None or now - self._synced_at >= self.fsync_interval:
                os.fsync(fd)
                self._dirty = False
                self._synced_at = now

    def _make_room(self, incoming: int) -> bool:
        """Apply the full policy with the lock held; True when *incoming* bytes may be written."""
        if incoming > self.max_bytes:
            return False
        now = time.monotonic()
        if self._estimate is None or now - self._scanned_at > _RESCAN_SECONDS:
            self._rescan(now)
        assert self._estimate is not None
        if self._estimate + incoming <= self.max_bytes:
            return True
        self._rescan(now)
        while self._estimate + incoming > self.max_bytes:
            if self.full == "drop_newest" or not self._drop_oldest_segment():
                return False
        return True

    def _rescan(self, now: float) -> None:
        self._estimate = sum(size(p) for p in self.segments())
        self._scanned_at = now

    def _drop_oldest_segment(self) -> bool:
        """Delete the oldest segment no other process writes; count its lost records."""
        for segment in self.segments():
            if segment == self._active:
                self._roll()
            elif written_elsewhere(segment):
                continue
            length = size(segment)
            self._dropped += count_lines(segment, read_offset(segment, length))
            remove_segment(segment)
            assert self._estimate is not None
            self._estimate -= length
            return True
        return False

    # -- reading -------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Segment files in replay order (oldest first)."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if is_segment(n))
        except FileNotFoundError:
            return []
        return [self.directory / n for n in names]

    def read(self, max_records: int, after: Chunk | None = None) -> Chunk | None:
        """The next undelivered lines of the oldest segment that has any, or None.

        With *after* (the last chunk handed out and not committed yet), reading
        continues behind it, so several chunks can be in flight at once. A
        segment that is fully delivered and no longer written is deleted on
        the way; a `Chunk` without records means only unreadable lines were found.
        """
        for segment in self.segments():
            if after is not None and segment.name < after.segment.name:
                continue
            length = size(segment)
            committed = offset = read_offset(segment, length)
            if after is not None and segment == after.segment:
                offset = max(offset, after.end)  # read, not committed yet: never deleted here
            writing = self._is_written(segment)
            if offset >= length:
                if committed >= length and not writing:
                    self._forget(segment, length)
                continue
            chunk = read_lines(segment, offset, max_records, complete_only=writing)
            if chunk.entries:
                return chunk
        return None

    def commit(self, chunk: Chunk, delivered: int | None = None) -> None:
        """Record that *chunk* (or its first *delivered* records) is accounted for.

        Unreadable lines before the next undelivered record are stepped over
        and counted as ``torn``. The offset file is replaced atomically; a
        segment that is then complete and no longer written is deleted.
        """
        if delivered is not None:
            chunk = chunk.split(delivered)[0]
        end = chunk.end
        seen = len(chunk.records)
        torn = len(chunk.entries) - seen
        with self._lock:
            self._replayed += seen
            self._torn += torn
        if end == chunk.start or not chunk.segment.exists():
            return  # nothing to record, or dropped (drop_oldest) while we were sending
        length = size(chunk.segment)
        if end >= length and not self._is_written(chunk.segment):
            self._forget(chunk.segment, length)
        else:
            write_offset(chunk.segment, end)

    @property
    def rejected_path(self) -> Path:
        """The dead-letter file of records the destination refused (see `reject`)."""
        return self.directory / REJECTED_FILE

    def reject(self, letters: Sequence[DeadLetter]) -> None:
        """Append *letters* to ``rejected.ndjson`` (durably) and count them; their records are given up on."""
        FileDeadLetters(self.rejected_path).write(letters)
        with self._lock:
            self._rejected += len(letters)

    def stats(self) -> SpoolStats:
        pending = 0
        segments = self.segments()
        for segment in segments:
            length = size(segment)
            pending += max(0, length - read_offset(segment, length))
        with self._lock:
            return SpoolStats(
                written=self._written,
                replayed=self._replayed,
                dropped=self._dropped,
                torn=self._torn,
                rejected=self._rejected,
                pending_bytes=pending,
                segments=len(segments),
            )

    def _is_written(self, segment: Path) -> bool:
        return segment == self._active or written_elsewhere(segment)

    def _forget(self, segment: Path, length: int) -> None:
        remove_segment(segment)
        with self._lock:
            if self._estimate is not None:
                self._estimate = max(0, self._estimate - length)


#: Tells a human on stderr, at most every 10 s (shared by the spool, its exporter and replayers).
report = Reporter("spool: ")


def _naming(exc: OSError, path: Path) -> OSError:
    """*exc* with the file or directory it concerns, so "No space left on device" says where.

    A failed ``write`` carries no file name (``open`` does, and keeps it).
    """
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))
