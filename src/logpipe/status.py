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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .spool.backlog import Backlog, SpoolCounter, spool_dirs
from .tail import RegistryEntry

__all__ = ["Backlog", "FilePosition", "SpoolCounter", "file_positions", "group_lag", "spool_dirs"]


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
