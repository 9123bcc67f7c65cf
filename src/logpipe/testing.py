"""Helpers for testing code that logs through logpipe.

`capture_records` is structlog's ``capture_logs`` for logpipe: inside the
block, every log call becomes a KafkaLog record through logpipe's real chain
and lands, decoded, in a list you can assert on.

`InMemoryExporter` keeps what it is given, so tests assert on real records
instead of mocks; it can also be told to fail or to hold exports back, which
is how logpipe's own tests drive the overflow and fallback paths. Pass an
instance to `logpipe.configure(exporter=...)`; it is not an entry point, so
no production configuration can select it by name.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from . import config
from .config import Settings, setting
from .exporters.base import Exporter, ExportResult
from .record import KafkaLog, Record

__all__ = ["InMemoryExporter", "MemoryOptions", "capture_records"]


@contextlib.contextmanager
def capture_records(**settings: Any) -> Iterator[list[KafkaLog]]:
    """Capture the records logged through structlog inside the block, decoded, in order.

    structlog is configured with logpipe's processor chain (the same
    processors `logpipe.processors()` returns: trace context, FuncName,
    rendering), ending in the list instead of a queue: each record is there
    when its log call returns, no thread or exporter involved. *settings* are
    `logpipe.Settings` fields (``action``, ``time_format``, ``service`` ...).
    The previous structlog configuration is restored on exit. As with
    structlog's ``capture_logs``, loggers cached before the block
    (``cache_logger_on_first_use``) keep their old processors.
    """
    from .pipeline import chain_processors  # pipeline imports exporters that import this module's base

    captured: list[KafkaLog] = []
    parsed = config.load(Settings, config.CORE_PREFIX, {"local_render": "none", **settings})
    previous = structlog.get_config()
    structlog.configure(processors=chain_processors(parsed, lambda record: captured.append(record.decoded())))
    try:
        yield captured
    finally:
        structlog.configure(**previous)


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
