"""The counters of one `Tailer`: what the command's display, its summary and the tests read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..runner import RunStats

__all__ = ["TailStats"]


@dataclass
class TailStats(RunStats):
    """Counters of one `Tailer`, updated by its thread (read them from its progress callback or after `run`)."""

    #: Lines taken from files (pieces of split lines count one each; empty lines too).
    lines_read: int = 0
    bytes_read: int = 0
    #: Records Kafka acknowledged.
    sent: int = 0
    #: Of the records read, those made by `wrap_line` (text, or JSON of no log format).
    wrapped: int = 0
    #: Of the records read, other programs' JSON log lines mapped onto KafkaLog (zap, ECS, ...).
    parsed: int = 0
    #: Of the records read, multi-line events (more than one line joined).
    joined: int = 0
    #: Lines longer than max_line_bytes (each split into pieces).
    too_long: int = 0
    #: Empty lines, skipped.
    empty: int = 0
    #: Records written to the dead-letter file.
    dead_lettered: int = 0
    #: Batches (or their failed records) sent again.
    retries: int = 0
    files_open: int = 0
    rotations: int = 0
    truncations: int = 0
    #: Records handed to Kafka and not acknowledged yet.
    in_flight: int = 0
    #: Called with the seconds from handing a batch to Kafka to its answer (`logpipe.metrics`' histogram).
    on_batch: Callable[[float], None] | None = None

    @property
    def rate(self) -> float:
        """Records acknowledged per second, from the first line read to the last acknowledgement."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return self.sent / (self.last_at - self.first_at)
