"""How much waits in a spool directory: records, bytes, the oldest, dead letters.

Read by `logpipe.status`, `logpipe.metrics`, `logpipe.stats()` (through
`SpoolExporter.backlog`) and the exit message of an application that ends
with records still spooled. Counting is incremental (`SpoolCounter`), since
it may run every few seconds over a large spool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import segments
from .segments import REJECTED_FILE
from .storage import Spool

__all__ = ["Backlog", "SpoolCounter", "spool_dirs"]


@dataclass(frozen=True)
class Backlog:
    """Records waiting in one spool directory (``<spool root>/<exporter>``)."""

    name: str
    directory: Path
    records: int
    bytes: int
    segments: int
    #: Epoch seconds of the oldest waiting record (its Time; the segment's creation when unreadable).
    oldest: float | None
    #: Dead letters in ``rejected.ndjson`` (refused again and again), waiting for ``logpipe replay``.
    rejected: int

    def age(self, now: float | None = None) -> float:
        """Seconds the oldest waiting record has waited (0 when nothing waits)."""
        if self.oldest is None or not self.records:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.oldest)


def spool_dirs(root: Path) -> list[Path]:
    """The spool directories under *root*: one per primary exporter (``kafka``, ``elasticsearch`` ...)."""
    try:
        return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


class SpoolCounter:
    """Counts waiting records of spool directories, re-reading only bytes appended since the last count.

    A scrape every few seconds of a spool holding a gigabyte must not read
    the gigabyte each time: per segment the count is kept with the offset and
    size it was made at, and only the appended tail is counted while the
    delivered offset stays put (replay moves it, and then the segment is
    counted again).
    """

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[int, int, int]] = {}

    def backlog(self, directory: Path) -> Backlog:
        spool = Spool(directory)  # opens nothing until appended to
        records = pending = 0
        oldest: float | None = None
        found = spool.segments()
        for segment in found:
            size = segments.size(segment)
            offset = segments.read_offset(segment, size)
            waiting = self._count(segment, offset, size)
            if waiting and oldest is None:
                oldest = _first_time(segment, offset)
            records += waiting
            pending += size - offset
        self._cache = {k: v for k, v in self._cache.items() if k.exists()}
        rejected_file = directory / REJECTED_FILE
        size = segments.size(rejected_file)
        rejected = self._count(rejected_file, 0, size) if size else 0  # one dead letter a line
        return Backlog(directory.name, directory, records, pending, len(found), oldest, rejected)

    def _count(self, segment: Path, offset: int, size: int) -> int:
        cached = self._cache.get(segment)
        if cached is not None and cached[0] == offset and cached[1] <= size:
            count = cached[2] + (_lines_between(segment, cached[1], size) if size > cached[1] else 0)
        else:
            count = segments.count_lines(segment, offset) if size > offset else 0
        self._cache[segment] = (offset, size, count)
        return count


def _lines_between(segment: Path, start: int, end: int) -> int:
    """Newlines in bytes [start, end) of *segment* (what was appended since the last count)."""
    count = 0
    try:
        with open(segment, "rb") as handle:
            handle.seek(start)
            left = end - start
            while left > 0 and (block := handle.read(min(left, 1 << 20))):
                count += block.count(b"\n")
                left -= len(block)
    except FileNotFoundError:
        return 0
    return count


def _first_time(segment: Path, offset: int) -> float | None:
    """Time of the first waiting record of *segment*; the segment's creation (in its name) as a fallback."""
    chunk = segments.read_lines(segment, offset, 1, complete_only=False)
    for record in chunk.records:
        if record.ts > 0:
            return record.ts
    try:
        return int(segment.name.split("-", 1)[0]) / 1e9
    except ValueError:
        return None
