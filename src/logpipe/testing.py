"""Helpers for testing code that logs through logpipe.

`InMemoryExporter` keeps what it is given, so tests assert on real records
instead of mocks; it can also be told to fail or to hold exports back, which
is how logpipe's own tests drive the overflow and fallback paths.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .config import setting
from .exporters.base import Exporter, ExportResult
from .record import KafkaLog, Record

__all__ = ["InMemoryExporter", "MemoryOptions"]


@dataclass(frozen=True)
class MemoryOptions:
    fail: bool = setting(False, "Answer every export with FAILURE (to exercise fallbacks).")


class InMemoryExporter(Exporter):
    """Collects exported records in a list; thread-safe."""

    Options = MemoryOptions
    options: MemoryOptions

    def __init__(self, options: MemoryOptions | None = None, *, fail: bool | None = None) -> None:
        super().__init__(options)
        self.fail = self.options.fail if fail is None else fail
        self.records: list[Record] = []
        self.batches: list[int] = []
        self.shut_down = False
        #: Cleared, it holds every export call until set again.
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Record]) -> ExportResult:
        self.gate.wait()
        if self.fail:
            return ExportResult.FAILURE
        with self._lock:
            self.records.extend(batch)
            self.batches.append(len(batch))
        return ExportResult.SUCCESS

    def shutdown(self, timeout: float = 10.0) -> None:
        self.shut_down = True

    def logs(self) -> list[KafkaLog]:
        """The exported records, decoded."""
        with self._lock:
            return [r.decoded() for r in self.records]

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.records]

    def describe(self) -> str:
        return "memory"
