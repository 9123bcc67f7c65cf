"""Segment files of a spool: names, committed offsets, writer locks, and reading lines as records.

Plain functions on paths, shared by `Spool` (storage) and the replayer. Lines
become records through `logpipe.ingress.parse`, the one validator: a line it
refuses (torn by a crash, not a KafkaLog object) is an unreadable entry that
replay steps over and counts.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import durable
from ..ingress import Invalid, parse
from ..record import Record

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per spool, no locking
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "OFFSET_SUFFIX",
    "REJECTED_FILE",
    "SEGMENT_SUFFIX",
    "Chunk",
    "count_lines",
    "is_segment",
    "read_lines",
    "read_offset",
    "remove_segment",
    "size",
    "write_offset",
    "written_elsewhere",
]

SEGMENT_SUFFIX = ".jsonl"
OFFSET_SUFFIX = ".offset"
LOCK_NAME = "replay.lock"
#: Dead letters of records the primary refused again and again (`logpipe.deadletter` format).
#: Not ``.jsonl``: nothing that lists segments may ever take it for one.
REJECTED_FILE = "rejected.ndjson"


def is_segment(name: str) -> bool:
    """Segment names start with their creation time in nanoseconds (hidden temporaries start with a dot)."""
    return name.endswith(SEGMENT_SUFFIX) and name[:1].isdigit()


@dataclass
class Chunk:
    """Lines read from one segment, and where each line ends.

    ``entries`` holds ``(record, end_offset)`` per line; the record is None for
    a line that cannot be replayed (torn or not a KafkaLog object), which is
    skipped and counted when the chunk is committed.
    """

    segment: Path
    start: int
    entries: list[tuple[Record | None, int]]

    @property
    def records(self) -> list[Record]:
        return [record for record, _ in self.entries if record is not None]

    @property
    def end(self) -> int:
        """Offset just past the last line read."""
        return self.entries[-1][1] if self.entries else self.start

    def starts(self) -> list[int]:
        """The offset where each record's line starts (where a dead letter says it came from)."""
        result, position = [], self.start
        for record, end in self.entries:
            if record is not None:
                result.append(position)
            position = end
        return result

    def split(self, records: int) -> tuple[Chunk, Chunk]:
        """The lines up to the first *records* records (with unreadable lines before the next one), and the rest."""
        seen, cut = 0, len(self.entries)
        for i, (record, _) in enumerate(self.entries):
            if record is not None:
                if seen == records:
                    cut = i
                    break
                seen += 1
        head = Chunk(self.segment, self.start, self.entries[:cut])
        return head, Chunk(self.segment, head.end, self.entries[cut:])


def size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _offset_path(segment: Path) -> Path:
    return segment.with_name(segment.name + OFFSET_SUFFIX)


def read_offset(segment: Path, length: int) -> int:
    """The committed offset of *segment*; 0 when missing or unreadable (replay it all)."""
    try:
        value = int(_offset_path(segment).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0
    return min(max(value, 0), length)


def write_offset(segment: Path, offset: int) -> None:
    """Replace the offset file atomically and durably."""
    final = _offset_path(segment)
    temp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    durable.replace(final, str(offset).encode(), temp=temp)


def remove_segment(segment: Path) -> None:
    """Delete a segment and its offset file (the segment first: a lone offset file is harmless)."""
    segment.unlink(missing_ok=True)
    _offset_path(segment).unlink(missing_ok=True)


def written_elsewhere(segment: Path) -> bool:
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


def count_lines(segment: Path, offset: int) -> int:
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


def read_lines(segment: Path, offset: int, max_records: int, *, complete_only: bool) -> Chunk:
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
            parsed = parse(line[:-1])
            record = None if isinstance(parsed, Invalid) else parsed
            chunk.entries.append((record, position))
            records += record is not None
    return chunk
