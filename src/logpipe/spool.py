"""The spool: a durable, bounded, on-disk queue of records waiting for their destination.

When a network exporter cannot deliver, its records are appended here and a
`Replayer` later moves them into the exporter, oldest first. The layout is
plain files, so an operator can inspect it with ``ls``, ``jq`` and ``tail``:

``<ns>-<pid>-<seq>.jsonl``
    A segment: JSON Lines, one record payload per line, append-only. A writer
    process only ever appends to the segment it created, and rolls to a new one
    when it would grow past ``segment_bytes``. Names sort by creation time, and
    that is the replay order (lines within a segment stay in order).
``<segment>.offset``
    How many bytes of the segment were delivered. It is replaced atomically
    (write, fsync, rename, fsync the directory) and only after the destination
    acknowledged, so a crash at any moment replays from the last acknowledged
    record: records may be sent twice, never lost (at-least-once).
``replay.lock``
    `fcntl.flock` lock held by the one process that replays this directory.
``rejected/``
    Records the destination refused again and again while accepting others
    (see `Replayer`); a spool directory of its own, so ``logpipe replay`` can
    send them once the cause is fixed.

The writer holds an exclusive `flock` on its open segment, which tells
readers in any process that the segment may still grow: its incomplete last
line is an append in progress, not damage. In a segment nobody writes any
more, an incomplete last line is what a crash mid-write leaves behind; it is
skipped and counted as ``torn``.

The directory's total size is capped at ``max_bytes``. When an append would
pass the cap, the ``full`` policy decides, and every lost record is counted
as ``dropped``:

``drop_oldest``
    delete the oldest whole segment (its undelivered records are lost), and
    repeat until the new records fit: keeps the most recent history;
``drop_newest``
    refuse the new records: keeps the oldest history.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import durable
from .exporters.base import Exporter, ExportResult, PartialFailure
from .record import Record
from .report import Reporter

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per spool, no locking
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Chunk",
    "DirectoryLock",
    "FsyncPolicy",
    "FullPolicy",
    "Replayer",
    "Spool",
    "SpoolStats",
    "Step",
    "report",
]

#: What an append does when the spool is at ``max_bytes``; see the module docstring.
FullPolicy = Literal["drop_oldest", "drop_newest"]
#: When appended data is forced to disk: never (the OS decides), batch (every append), interval.
FsyncPolicy = Literal["never", "batch", "interval"]

SEGMENT_SUFFIX = ".jsonl"
OFFSET_SUFFIX = ".offset"
LOCK_NAME = "replay.lock"
REJECTED_DIR = "rejected"
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


@dataclass
class Chunk:
    """Records read from one segment, and where each line ends.

    ``entries`` holds ``(record, end_offset)`` per line; the record is None for
    a line that cannot be replayed (torn or not a KafkaLog object), which is
    skipped and counted when `Spool.commit` moves past it.
    """

    segment: Path
    start: int
    entries: list[tuple[Record | None, int]]

    @property
    def records(self) -> list[Record]:
        return [record for record, _ in self.entries if record is not None]


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
            fd = self._writable(len(data))
            try:
                durable.write_all(fd, data)
            except OSError:
                self._roll()  # a partial line must end a segment, never precede the next write
                raise
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
        self.directory.mkdir(parents=True, exist_ok=True)
        ns = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = ns
        name = f"{ns:020d}-{os.getpid()}-{next(self._seq):06d}{SEGMENT_SUFFIX}"
        temp = self.directory / f".{name}.new"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)
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
        self._estimate = sum(_size(p) for p in self.segments())
        self._scanned_at = now

    def _drop_oldest_segment(self) -> bool:
        """Delete the oldest segment no other process writes; count its lost records."""
        for segment in self.segments():
            if segment == self._active:
                self._roll()
            elif _written_elsewhere(segment):
                continue
            size = _size(segment)
            self._dropped += _count_lines(segment, _read_offset(segment, size))
            _remove_segment(segment)
            assert self._estimate is not None
            self._estimate -= size
            return True
        return False

    # -- reading -------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Segment files in replay order (oldest first)."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(SEGMENT_SUFFIX) and n[0] != ".")
        except FileNotFoundError:
            return []
        return [self.directory / n for n in names]

    def read(self, max_records: int) -> Chunk | None:
        """The next undelivered lines of the oldest segment that has any, or None.

        A segment that is fully delivered and no longer written is deleted
        on the way; an empty `Chunk` means only unreadable lines were found.
        """
        for segment in self.segments():
            size = _size(segment)
            offset = _read_offset(segment, size)
            writing = self._is_written(segment)
            if offset >= size:
                if not writing:
                    self._forget(segment, size)
                continue
            chunk = _read_lines(segment, offset, max_records, complete_only=writing)
            if chunk.entries:
                return chunk
        return None

    def commit(self, chunk: Chunk, delivered: int) -> None:
        """Record that the first *delivered* records of *chunk* reached the destination.

        Unreadable lines before the next undelivered record are stepped over
        and counted as ``torn``. The offset file is replaced atomically; a
        segment that is then complete and no longer written is deleted.
        """
        end = chunk.start
        seen = torn = 0
        for record, line_end in chunk.entries:
            if record is not None:
                if seen == delivered:
                    break
                seen += 1
            else:
                torn += 1
            end = line_end
        with self._lock:
            self._replayed += seen
            self._torn += torn
        if end == chunk.start or not chunk.segment.exists():
            return  # nothing to record, or dropped (drop_oldest) while we were sending
        size = _size(chunk.segment)
        if end >= size and not self._is_written(chunk.segment):
            self._forget(chunk.segment, size)
        else:
            _write_offset(chunk.segment, end)

    def reject(self, records: Sequence[Record]) -> None:
        """Move *records* (already committed past) into the ``rejected/`` spool."""
        target = Spool(self.directory / REJECTED_DIR, max_bytes=1 << 62, fsync="batch")
        try:
            target.append([r.payload for r in records])
        finally:
            target.close()
        with self._lock:
            self._rejected += len(records)

    def stats(self) -> SpoolStats:
        pending = 0
        segments = self.segments()
        for segment in segments:
            size = _size(segment)
            pending += max(0, size - _read_offset(segment, size))
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
        return segment == self._active or _written_elsewhere(segment)

    def _forget(self, segment: Path, size: int) -> None:
        _remove_segment(segment)
        with self._lock:
            if self._estimate is not None:
                self._estimate = max(0, self._estimate - size)


# -- replaying ------------------------------------------------------------------------


class Step(enum.Enum):
    """What one `Replayer.step` did."""

    #: Nothing is pending.
    IDLE = "idle"
    #: Records were delivered (or unreadable lines stepped over); call again.
    PROGRESS = "progress"
    #: The destination failed; try again later.
    BLOCKED = "blocked"


class Replayer:
    """Moves a spool's records into an exporter, in order, committing only what was delivered.

    On `PartialFailure` the records before the first failed one are committed
    and the next attempt starts at that record, so order is kept. A record the
    destination refuses *max_attempts* times in a row while accepting others
    (a poison record: too large, invalid) would block the spool forever; it is
    moved to ``rejected/`` and counted instead (0: never reject).
    """

    def __init__(self, spool: Spool, primary: Exporter, *, batch: int = 512, max_attempts: int = 5) -> None:
        self.spool = spool
        self.primary = primary
        self.batch = batch
        self.max_attempts = max_attempts
        self._head: str | None = None
        self._head_failures = 0

    def step(self) -> Step:
        chunk = self.spool.read(self.batch)
        if chunk is None:
            return Step.IDLE
        records = chunk.records
        if not records:
            self.spool.commit(chunk, 0)
            return Step.PROGRESS
        try:
            result = self.primary.export(records)
        except Exception as exc:  # an exporter bug must not kill the replayer
            report(f"replay: export raised {type(exc).__name__}: {exc}")
            result = ExportResult.FAILURE
        if result is ExportResult.SUCCESS:
            self.spool.commit(chunk, len(records))
            self._head, self._head_failures = None, 0
            return Step.PROGRESS
        if isinstance(result, PartialFailure) and result.failed:
            return self._partial(chunk, records, result.failed)
        return Step.BLOCKED

    def _partial(self, chunk: Chunk, records: list[Record], failed: Sequence[Record]) -> Step:
        failed_ids = {r.id for r in failed}
        first = next((i for i, r in enumerate(records) if r.id in failed_ids), len(records))
        self.spool.commit(chunk, first)
        if first == len(records):
            return Step.PROGRESS
        head = records[first]
        if head.id == self._head:
            self._head_failures += 1
        else:
            self._head, self._head_failures = head.id, 1
        if self.max_attempts and self._head_failures >= self.max_attempts:
            rest = self.spool.read(1)
            if rest is not None and rest.records and rest.records[0].id == head.id:
                self.spool.reject([head])
                self.spool.commit(rest, 1)
                report(f"replay: record {head.id} refused {self._head_failures} times; moved to {REJECTED_DIR}/")
            self._head, self._head_failures = None, 0
            return Step.PROGRESS
        return Step.PROGRESS if first else Step.BLOCKED


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
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


# -- file helpers ---------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _offset_path(segment: Path) -> Path:
    return segment.with_name(segment.name + OFFSET_SUFFIX)


def _read_offset(segment: Path, size: int) -> int:
    """The committed offset of *segment*; 0 when missing or unreadable (replay it all)."""
    try:
        value = int(_offset_path(segment).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0
    return min(max(value, 0), size)


def _write_offset(segment: Path, offset: int) -> None:
    """Replace the offset file atomically and durably."""
    final = _offset_path(segment)
    temp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    durable.replace(final, str(offset).encode(), temp=temp)


def _remove_segment(segment: Path) -> None:
    """Delete a segment and its offset file (the segment first: a lone offset file is harmless)."""
    segment.unlink(missing_ok=True)
    _offset_path(segment).unlink(missing_ok=True)


def _written_elsewhere(segment: Path) -> bool:
    """True while some process holds the writer's lock on *segment*."""
    if fcntl is None:
        return False
    try:
        fd = os.open(segment, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        return False
    finally:
        os.close(fd)  # drops our shared lock, if we got it


def _count_lines(segment: Path, offset: int) -> int:
    """Records in *segment* after *offset* (a torn last line counts as one)."""
    count = 0
    last = b"\n"
    try:
        with open(segment, "rb") as handle:
            handle.seek(offset)
            while block := handle.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
    except FileNotFoundError:
        return 0
    return count + (last != b"\n")


def _read_lines(segment: Path, offset: int, max_records: int, *, complete_only: bool) -> Chunk:
    """Read up to *max_records* lines of *segment* from *offset*.

    With *complete_only* (the segment is still written) an incomplete last
    line is left for later; otherwise it is a torn write, returned as an
    unreadable entry.
    """
    chunk = Chunk(segment, offset, [])
    try:
        handle = open(segment, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return chunk
    with handle:
        handle.seek(offset)
        position = offset
        records = 0
        while records < max_records:
            line = handle.readline()
            if not line:
                break
            if not line.endswith(b"\n"):
                if not complete_only:
                    chunk.entries.append((None, position + len(line)))
                break
            position += len(line)
            record = _parse(line[:-1])
            chunk.entries.append((record, position))
            records += record is not None
    return chunk


def _parse(payload: bytes) -> Record | None:
    try:
        return Record.from_json(payload)
    except ValueError:
        return None


#: Tells a human on stderr, at most every 10 s (shared by the spool, its exporter and replayers).
report = Reporter("spool: ")
