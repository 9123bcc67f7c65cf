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
``rejected.ndjson``
    Records the destination refused again and again while accepting others
    (see `Replayer`), as dead letters in logpipe's one format
    (`logpipe.deadletter`, source ``{"spool", "segment", "offset"}``), so
    ``logpipe replay`` can send them once the cause is fixed.

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

Modules: `segments` (files, offsets, reading lines through
`logpipe.ingress`), `storage` (`Spool`), `lock` (`DirectoryLock`), `replay`
(`Replayer`), `group` (`GroupCommit`: durable mode's shared write and fsync,
see `logpipe.journal`).
"""

from __future__ import annotations

from .lock import DirectoryLock
from .replay import Replayer, Step
from .segments import LOCK_NAME, OFFSET_SUFFIX, REJECTED_FILE, SEGMENT_SUFFIX, Chunk
from .storage import FsyncPolicy, FullPolicy, Spool, SpoolStats, report

__all__ = [
    "LOCK_NAME",
    "OFFSET_SUFFIX",
    "REJECTED_FILE",
    "SEGMENT_SUFFIX",
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
