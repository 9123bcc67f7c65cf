"""Spool replay: move a spool's records into an exporter, committing only what is accounted for.

`Replayer` is a thin user of `logpipe.inflight.InFlight`, the engine the
dispatcher, the tailer and the shipper use too:

* chunks of up to ``batch`` records are read in order and begun while fewer
  than the primary's ``max_in_flight`` are out (the Kafka exporter keeps
  several batches on the wire; a plain exporter has one);
* flights are settled oldest first; a chunk whose records all arrived (or
  were rejected) is acknowledged, and the acknowledged front of chunks is
  committed: their segment offsets written (`Spool.commit`);
* the records of a chunk the primary did not take are begun again *on the
  same chunk*, so the chunk keeps its place in the commit order. Before that,
  the delivered prefix of the oldest chunk is committed at once, so a crash
  resends as little as possible;
* a record the primary refuses *max_attempts* times (a `PartialFailure` that
  names it, so the primary is up and takes others) would block the spool
  forever: it is written as a dead letter (`logpipe.deadletter`, source
  ``{"spool", "segment", "offset"}``) to ``rejected.ndjson`` and counted.

Order: records arrive in spool order, except that a record the primary
refused arrives after the records sent behind it (it is retried, not the
whole chunk). Waiting before a retry is the caller's business (`Step.BLOCKED`
says when; the spool exporter and ``logpipe replay`` wait with a
`logpipe.backoff.Backoff`).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence

from ..deadletter import DeadLetter
from ..exporters.base import Done, Exporter, ExportResult, Outcome, PartialFailure, Pending
from ..inflight import InFlight
from ..record import Record
from .segments import REJECTED_FILE, Chunk
from .storage import Spool, report

__all__ = ["Replayer", "Step"]


class Step(enum.Enum):
    """What one `Replayer.step` did."""

    #: Nothing is pending.
    IDLE = "idle"
    #: Records were delivered (or unreadable lines stepped over); call again.
    PROGRESS = "progress"
    #: The destination failed; try again later.
    BLOCKED = "blocked"


class _Flight:
    """One chunk on its way: the part not committed yet, and which of its records are still to deliver."""

    __slots__ = ("chunk", "records", "starts", "waiting")

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.records = chunk.records
        self.starts = chunk.starts()
        #: Positions (in ``records``) not delivered yet, in order.
        self.waiting = list(range(len(self.records)))

    def batch(self) -> list[Record]:
        return [self.records[i] for i in self.waiting]

    def delivered_prefix(self) -> int:
        """Records at the start of the chunk that were all delivered."""
        return self.waiting[0] if self.waiting else len(self.records)

    def drop_prefix(self, n: int) -> None:
        """The first *n* records were committed: forget them."""
        self.chunk = self.chunk.split(n)[1]
        self.records, self.starts = self.records[n:], self.starts[n:]
        self.waiting = [i - n for i in self.waiting]


class Replayer:
    """Moves a spool's records into an exporter through one in-flight window; see the module docstring.

    Not thread-safe: one loop owns one Replayer (and `DirectoryLock` makes it
    one process per directory).
    """

    def __init__(self, spool: Spool, primary: Exporter, *, batch: int = 512, max_attempts: int = 5) -> None:
        self.spool = spool
        self.primary = primary
        self.batch = batch
        self.max_attempts = max_attempts
        self._window: InFlight[_Flight, Outcome] = InFlight(
            max(1, primary.max_in_flight), failed=ExportResult.FAILURE, commit=self._commit, report=self._report
        )
        self._retry: deque[_Flight] = deque()
        self._last: Chunk | None = None  # the newest chunk read: the next one starts behind it
        self._attempts: dict[str, int] = {}

    def step(self) -> Step:
        """Begin what the window allows, settle the oldest flight; what happened.

        When the oldest flight is BLOCKED, the flights begun behind it are
        settled in the same step, before the caller backs off: begun while the
        destination failed, they failed with it (a Kafka exporter whose broker
        is down answers FAILURE at once). Settled one per step, each stale
        failure would cost the caller one more backoff after the destination
        is back: with a window of 3 and delays of up to 10 s, replay resumed
        20-30 s after the broker, not within one delay.
        """
        self._launch()
        settled = self._window.settle()
        if settled is None:
            self._last = None  # nothing open: read from the committed offsets again
            return Step.IDLE
        step = self._settled(*settled)
        while step is Step.BLOCKED and (behind := self._window.settle()) is not None:
            if self._settled(*behind) is Step.PROGRESS:
                step = Step.PROGRESS
        return step

    # -- beginning ------------------------------------------------------------------

    def _launch(self) -> None:
        """Retries first (in order), and new chunks only while no chunk waits for one."""
        while self._retry and not self._window.full:
            self._begin(self._retry.popleft())
        while not self._retry and not self._window.full:
            chunk = self.spool.read(self.batch, self._last)
            if chunk is None:
                return
            self._last = chunk
            self._begin(_Flight(chunk))

    def _begin(self, flight: _Flight) -> None:
        batch = flight.batch()
        self._window.begin(flight, lambda: self._start(batch))

    def _start(self, batch: list[Record]) -> Pending[Outcome]:
        if not batch:  # only unreadable lines: nothing to send, the chunk is accounted for
            return Done(ExportResult.SUCCESS)
        return self.primary.begin(batch)

    # -- settling -------------------------------------------------------------------

    def _settled(self, flight: _Flight, outcome: Outcome) -> Step:
        sent = len(flight.waiting)
        if outcome is ExportResult.SUCCESS or (isinstance(outcome, PartialFailure) and not outcome.failed):
            flight.waiting = []
        elif isinstance(outcome, PartialFailure):
            failed = {r.id for r in outcome.failed}
            flight.waiting = [i for i in flight.waiting if flight.records[i].id in failed]
            self._reject_poison(flight)
        moved = sent - len(flight.waiting)
        if not flight.waiting:
            for position in range(len(flight.records)):
                self._attempts.pop(flight.records[position].id, None)
            self._window.acknowledge(flight)
            return Step.PROGRESS
        self._commit_prefix(flight)
        self._retry.append(flight)
        return Step.PROGRESS if moved else Step.BLOCKED

    def _reject_poison(self, flight: _Flight) -> None:
        """Count a refusal for each record still waiting; dead-letter those refused max_attempts times."""
        if not self.max_attempts:
            return
        poison = []
        for position in flight.waiting:
            record = flight.records[position]
            self._attempts[record.id] = self._attempts.get(record.id, 0) + 1
            if self._attempts[record.id] >= self.max_attempts:
                poison.append(position)
        if not poison:
            return
        self.spool.reject([self._letter(flight, p) for p in poison])
        for position in poison:
            record = flight.records[position]
            report(
                f"replay: record {record.id} refused {self._attempts.pop(record.id)} times; "
                f"written to {self.spool.directory / REJECTED_FILE}"
            )
        flight.waiting = [i for i in flight.waiting if i not in poison]

    def _letter(self, flight: _Flight, position: int) -> DeadLetter:
        record = flight.records[position]
        source = {"spool": str(self.spool.directory), "segment": flight.chunk.segment.name}
        return DeadLetter(
            record.payload,
            f"refused {self.max_attempts} times by {self.primary.describe()} during spool replay",
            {**source, "offset": flight.starts[position]},
        )

    # -- committing -----------------------------------------------------------------

    def _commit_prefix(self, flight: _Flight) -> None:
        """Commit the delivered records at the start of the oldest open chunk (less to resend after a crash)."""
        prefix = flight.delivered_prefix()
        if prefix and next(self._window.batches(), None) is flight:
            self.spool.commit(flight.chunk, prefix)
            flight.drop_prefix(prefix)

    def _commit(self, front: Sequence[_Flight]) -> None:
        """The acknowledged front of chunks: write their segments' offsets."""
        for flight in front:
            self.spool.commit(flight.chunk)

    @staticmethod
    def _report(message: str) -> None:
        report(f"replay: {message}")
