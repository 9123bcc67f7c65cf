"""Shared by the spool tests: records of equal size, a spool holding them, draining a spool, a primary that fails
after N records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logpipe.exporters.base import Exporter, ExportResult, PartialFailure
from logpipe.record import Record, info
from logpipe.spool import Replayer, Spool, Step


def records(n: int, prefix: str = "r") -> list[Record]:
    """*n* records whose payloads all have the same length (size arithmetic in the cap tests)."""
    return [info(f"{prefix}{i:05d}", "tests.spool", {"n": f"{i:05d}"}) for i in range(n)]


def spooled(directory: Path, n: int, **options: Any) -> tuple[list[Record], Spool]:
    """*n* `records` appended to a `Spool` at *directory* (with *options*) and closed, as a crashed process leaves
    them: the records, and the spool."""
    sent = records(n)
    spool = Spool(directory, **options)
    spool.append([r.payload for r in sent])
    spool.close()
    return sent, spool


def drain(spool: Spool, primary: Exporter, batch: int = 7) -> None:
    """Replay until the spool is empty; fails the test if the primary blocks."""
    replayer = Replayer(spool, primary, batch=batch)
    while (step := replayer.step()) is Step.PROGRESS:
        pass
    assert step is Step.IDLE


class FailAfter(Exporter):
    """Accepts *limit* records in total, then fails the rest of that batch and everything after."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.records: list[Record] = []

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        room = max(0, self.limit - len(self.records))
        self.records.extend(batch[:room])
        if room >= len(batch):
            return ExportResult.SUCCESS
        return PartialFailure(batch[room:]) if room else ExportResult.FAILURE
