"""The `Tailer`: the loop that ties paths, harvesters, the registry and the exporter together.

Vector's ``file_server``. Each turn of the loop scans the patterns now and
then (`Files.scan`), reads lines from the open files into a `Batch`
(round robin, up to batch_size lines / batch_bytes) and begins its delivery
through the exporter. Deliveries are kept in flight by the one in-flight
engine (`logpipe.inflight.InFlight`): up to the exporter's ``max_in_flight``
batches out, settled oldest first; a batch with records the exporter did not
take is begun again with just those records, keeping its place in the commit
order, and the engine's commit hook advances the harvesters' committed
offsets (what the registry writes) past the acknowledged front only.

While a batch has failed records, no new lines are read (the file is the
buffer) and the retries wait a `logpipe.backoff.Backoff` (``backoff``
doubling up to ``max_backoff``, jittered, ended by `stop`). A record the
exporter refuses ``max_attempts`` times goes to the dead-letter file
(`logpipe.deadletter`, source ``{"path", "offset"}``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..deadletter import DeadLetter, FileDeadLetters
from ..exporters.base import Done, Exporter, ExportResult, Outcome, PartialFailure
from ..inflight import InFlight
from ..record import Record
from ..runner import Runner
from .checkpoint import Registry
from .files import Files
from .fingerprint import Key
from .harvester import Harvester
from .options import ENV_PREFIX, TailOptions
from .stats import TailStats

__all__ = ["Batch", "Tailer"]


@dataclass(eq=False)
class Batch:
    """Records read together, where each came from, the file offsets they reach, and what is not delivered yet."""

    records: list[Record]
    #: In step with *records*: the byte offset of the line each was made of.
    offsets: list[int]
    #: ``(index of its first record, path)`` of each file the batch took lines from, in record order.
    paths: list[tuple[int, str]]
    #: key -> (harvester, its generation, offset after the batch's last line of it)
    marks: dict[Key, tuple[Harvester, int, int]]
    #: Records not acknowledged yet (all of them until the first flight settles).
    todo: list[Record]
    #: The records of the flight out (or last out), and when it began (monotonic).
    sent: list[Record] = field(default_factory=list)
    began: float = 0.0
    #: Some of its records failed once: no new lines are read until it is settled.
    retried: bool = False
    attempts: dict[int, int] = field(default_factory=dict)

    def sources(self, records: list[Record]) -> list[dict[str, Any]]:
        """``{"path", "offset"}`` of the line each of *records* was made of (dead letters; not the hot path)."""
        index = {id(r): i for i, r in enumerate(self.records)}
        starts = [start for start, _ in self.paths]
        found = []
        for record in records:
            i = index[id(record)]
            found.append({"path": self.paths[bisect.bisect_right(starts, i) - 1][1], "offset": self.offsets[i]})
        return found


class Tailer(Runner[TailStats]):
    """Follows the files matching ``options.paths`` and sends their lines through *exporter*.

    `run` blocks until `stop` (or, with *once*, until every matching file is
    read to its end and everything read is acknowledged). *exporter* defaults
    to the ``kafka`` exporter configured from ``LOGPIPE_KAFKA_*`` (with
    *exporter_overrides*); a given exporter is not shut down by the tailer.
    *progress* is called from the tailer's thread every ``status_interval``
    seconds and once at the end.
    """

    def __init__(
        self,
        options: TailOptions,
        exporter: Exporter | None = None,
        *,
        once: bool = False,
        exporter_overrides: Mapping[str, Any] | None = None,
        progress: Callable[[TailStats], None] | None = None,
    ) -> None:
        super().__init__(
            TailStats(),
            shutdown_timeout=options.shutdown_timeout,
            status_interval=options.status_interval,
            progress=progress,
        )
        self.options = options
        self.once = once
        self._own_exporter = exporter is None
        if exporter is None:
            from .. import plugins
            from ..exporters.process import isolate

            exporter = isolate(plugins.create("kafka", exporter_overrides), options.isolation)
        self.exporter = exporter
        self.registry = Registry(options.registry)
        self.files = Files(options, self.registry, self.stats, self.error)
        self.dead_letters = FileDeadLetters(options.dead_letter, f"{ENV_PREFIX}DEAD_LETTER")
        self._flights: InFlight[Batch, Outcome] = InFlight(
            max(1, exporter.max_in_flight),
            failed=ExportResult.FAILURE,
            commit=self._commit,
            report=lambda text: self.error(f"export: {text}"),
        )
        self._backoff = self.backoff(options.backoff, options.max_backoff)
        self._failing = False
        #: When failed records may be sent again (monotonic; set by `_fail` before it is ever read).
        self._retry_at = time.monotonic()
        self._next_scan: float | None = None

    @property
    def unacknowledged(self) -> int:
        """Records read and not yet acknowledged nor dead-lettered."""
        return sum(len(b.todo) for b in self._flights.batches())

    def run(self) -> TailStats:
        """Tail until `stop` (or the end of every file with *once*); returns the final counters.

        Raises `ConfigError` for an unreadable registry.
        """
        try:
            self.registry.load()
            self.stats.state = "running"
            self._loop()
            self._drain()
        finally:
            self.files.save(force=True)
            self.files.close_all()
            if self._own_exporter:
                self.exporter.shutdown(5.0)
            self.stats.state = "stopped"
            self.tick(force=True)
        return self.stats

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        flights = self._flights
        while not self.stopping:
            now = time.monotonic()
            if self._next_scan is None or now >= self._next_scan:
                self.files.scan()
                self._next_scan = now + self.options.scan_interval
            began = read = False
            if self._failing or self._unsent():
                if not len(flights) and now >= self._retry_at:
                    began = self._resend()
            elif not self._recovering():
                batch = self._collect()
                if batch is not None:
                    read = True
                    began = self._begin(batch)
            if len(flights) and (flights.full or not began):
                self._complete()
                # Rate-limited by registry_flush: a file that never goes quiet is checkpointed too.
                self.files.save()
                continue
            if began or read:
                continue
            self._idle()
            if self.once and self._finished():
                break
            wait = self.options.poll_interval
            if self._failing:
                wait = max(0.0, min(wait, self._retry_at - time.monotonic()))
            self._stop.wait(wait)

    def _idle(self) -> None:
        """Nothing to read or settle right now: close what is done, write the registry, show progress."""
        self.files.close_idle(self.once, self._busy)
        self.files.save()
        self.tick()

    def _busy(self, key: Key) -> bool:
        """A batch not yet committed holds lines of the file *key*."""
        return any(key in b.marks for b in self._flights.batches())

    def _unsent(self) -> bool:
        """Failed records wait to be sent again (more failed batches than fit in flight at once)."""
        return any(b.todo and not self._flights.flying(b) for b in self._flights.batches())

    def _recovering(self) -> bool:
        """Records that failed are still unsettled: the file waits (memory stays bounded by what is in hand)."""
        return any(b.retried for b in self._flights.batches())

    def _finished(self) -> bool:
        """With *once*: every file at its end and every record settled."""
        if self._flights.open:
            return False
        return all(h.at_eof and not h.has_lines() for h in self.files.open.values())

    def _drain(self) -> None:
        """After a stop: wait for the batches in flight (up to shutdown_timeout), retry none."""
        while len(self._flights):
            if self.out_of_time():
                self.error(f"stopped with {len(self._flights)} batch(es) in flight; they are read again next time")
                return
            self._complete()

    # -- reading --------------------------------------------------------------------------------

    def _collect(self) -> Batch | None:
        """Records of up to batch_size lines / batch_bytes from the open files, round robin."""
        o = self.options
        records: list[Record] = []
        offsets: list[int] = []
        paths: list[tuple[int, str]] = []
        marks: dict[Key, tuple[Harvester, int, int]] = {}
        lines_left, bytes_left = o.batch_size, o.batch_bytes
        for h in list(self.files.open.values()):
            if lines_left <= 0 or bytes_left <= 0:
                break
            if not h.has_lines() and not self._fill(h):
                continue
            paths.append((len(records), h.path))
            n, size = h.take(lines_left, bytes_left, records, offsets, self.stats)
            lines_left -= n
            bytes_left -= size
            marks[h.key] = (h, h.generation, h.mark)
        if not marks:
            return None
        if self.stats.first_at is None:
            self.stats.first_at = time.monotonic()
        return Batch(records, offsets, paths, marks, list(records))

    def _fill(self, h: Harvester) -> bool:
        """Read the next block of *h* (at the end of a finished moved file, its last partial line); True if lines."""
        generation = h.generation
        try:
            h.read(self.options.max_line_bytes, self.stats)
        except OSError as exc:
            self.error(f"{h.path}: {exc}")
            return False
        if h.generation != generation:
            self.files.dirty = True  # truncated: the registry goes back to 0 too
        if not h.has_lines() and h.moved and self._done_with(h):
            h.flush_partial()
        if not h.has_lines() and h.holding and (self.once or h.quiet() >= self.options.multiline_timeout):
            h.flush_due = True  # the last event of a quiet file: nothing more will join it
        return h.has_lines()

    def _done_with(self, h: Harvester) -> bool:
        """A moved file that has been quiet long enough (at once in --once mode) is finished."""
        return self.once or time.monotonic() - h.last_data >= self.options.close_rotated

    # -- sending --------------------------------------------------------------------------------

    def _begin(self, batch: Batch) -> bool:
        """Hand *batch* to the exporter; False when it had no records (only empty lines: nothing to wait for)."""
        if not batch.todo:
            self._flights.begin(batch, lambda: Done(ExportResult.SUCCESS))
            return False
        self._send(batch, batch.todo)
        return True

    def _send(self, batch: Batch, records: list[Record]) -> None:
        batch.sent = records
        batch.began = time.monotonic()
        self.stats.in_flight += len(records)
        self._flights.begin(batch, lambda: self.exporter.begin(records))

    def _resend(self) -> bool:
        """Begin the records of failed batches again, oldest first; True when something was begun."""
        began = False
        for batch in self._flights.batches():
            if self._flights.full:
                break
            if batch.todo and not self._flights.flying(batch):
                self.stats.retries += 1
                self._send(batch, batch.todo)
                began = True
        if began:
            self._failing = False
        return began

    def _complete(self) -> None:
        """Settle the oldest flight; count, dead-letter or keep for retry what it did not deliver."""
        settled = self._flights.settle()
        if settled is None:
            return
        batch, outcome = settled
        sent = batch.sent
        if self.stats.on_batch is not None and sent:
            self.stats.on_batch(time.monotonic() - batch.began)
        self.stats.in_flight -= len(sent)
        if outcome is ExportResult.SUCCESS:
            failed: list[Record] = []
            self.stats.sent += len(sent)
        elif isinstance(outcome, PartialFailure):
            self.stats.sent += len(sent) - len(outcome.failed)
            failed = self._refused(batch, list(outcome.failed))
        else:
            failed = list(sent)
        batch.todo = failed
        self.stats.last_at = time.monotonic()
        if failed:
            batch.retried = True
            self._fail(f"{len(failed)} of {len(sent)} record(s) not acknowledged by {self.exporter.describe()}")
        else:
            self._backoff.reset()
            self._flights.acknowledge(batch)
        if not self._flights.open and not self._failing:
            self.stats.state = "running"

    def _commit(self, front: list[Batch]) -> None:
        """The in-flight engine's commit hook: *front* is acknowledged, with every batch before it."""
        for batch in front:
            for h, generation, end in batch.marks.values():
                self.files.commit(h, generation, end)

    def _refused(self, batch: Batch, failed: list[Record]) -> list[Record]:
        """Records of a PartialFailure; those refused max_attempts times are dead-lettered and dropped here."""
        dead: list[Record] = []
        keep: list[Record] = []
        for record in failed:
            tries = batch.attempts.get(id(record), 0) + 1
            batch.attempts[id(record)] = tries
            (dead if tries >= self.options.max_attempts else keep).append(record)
        if dead:
            reason = f"refused by {self.exporter.describe()} {self.options.max_attempts} times"
            try:
                letters = [DeadLetter(r.payload, reason, src) for r, src in zip(dead, batch.sources(dead), strict=True)]
                self.dead_letters.write(letters)
            except OSError as exc:
                self.error(str(exc))
                return failed
            self.stats.dead_lettered += len(dead)
            self.error(
                f"{len(dead)} record(s) refused {self.options.max_attempts} times written to "
                f"{self.options.dead_letter}, e.g. Id {dead[0].id}"
            )
        return keep

    def _fail(self, reason: str) -> None:
        """Stop reading; send the records in hand again after the backoff."""
        if not self._failing:
            self.error(f"{reason}; retrying in {self._backoff.peek():g}s")
        self._failing = True
        self.stats.state = "waiting for Kafka"
        self._retry_at = time.monotonic() + self._backoff.delay()
