"""What waits where on this machine: spool backlogs, tail positions, the shipper group's lag.

Read-only views over state other parts of logpipe keep on disk or in Kafka,
shared by ``logpipe status`` (one screen, an exit code for health checks)
and `logpipe.metrics` (the same numbers as Prometheus gauges). The spool's
on-disk format is read with `logpipe.spool`'s own helpers and the tail
registry with `logpipe.tail.Registry`, so this module never re-implements
either format.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import spool as spool_mod
from .spool import segments
from .tail import RegistryEntry

__all__ = ["Backlog", "FilePosition", "SpoolCounter", "file_positions", "group_lag", "spool_dirs"]


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
        spool = spool_mod.Spool(directory)  # opens nothing until appended to
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
        rejected_file = directory / spool_mod.REJECTED_FILE
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


@dataclass(frozen=True)
class FilePosition:
    """One file ``logpipe tail`` follows: what Kafka acknowledged against what the file holds."""

    path: str
    offset: int
    #: Current size, or None when the path is gone or now names another file (rotated away).
    size: int | None

    @property
    def behind(self) -> int | None:
        return None if self.size is None else max(0, self.size - self.offset)


def file_positions(entries: Iterable[RegistryEntry]) -> list[FilePosition]:
    """Registry entries against the files' sizes; a path whose inode changed reports no size."""
    out = []
    for entry in entries:
        try:
            st = os.stat(entry.path)
            size: int | None = st.st_size if (st.st_dev, st.st_ino) == (entry.dev, entry.ino) else None
        except OSError:
            size = None
        out.append(FilePosition(entry.path, entry.offset, size))
    return sorted(out, key=lambda p: p.path)


def group_lag(bootstrap: str, group: str, timeout: float = 5.0) -> dict[tuple[str, int], tuple[int, int]]:
    """Committed offset and log end of every partition *group* has committed: ``(topic, p) -> (committed, end)``.

    With kafka-python's admin client: no group membership is taken, so it
    is safe next to running shippers. Raises the client's errors when Kafka
    does not answer within *timeout*.
    """
    from kafka import KafkaAdminClient, KafkaConsumer

    ms = int(timeout * 1000)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ms, client_id="logpipe-status")
    try:
        committed: dict[Any, Any]
        if hasattr(admin, "list_group_offsets"):  # kafka-python 3
            committed = admin.list_group_offsets({group: None}).get(group, {})
        else:  # kafka-python 2
            committed = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    if not committed:
        return {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=ms, group_id=None)
    try:
        ends = consumer.end_offsets(list(committed))
    finally:
        consumer.close()
    return {
        (tp.topic, tp.partition): (meta.offset, int(ends.get(tp, meta.offset)))
        for tp, meta in sorted(committed.items())
    }
