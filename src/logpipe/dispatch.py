"""The one batch worker that serves every exporter.

A log call only appends an encoded record to a bounded deque under a lock and
returns (once per batch it may wait, at most 5 ms, while the worker collects
delivery reports: see `Dispatcher._serve`); a daemon thread takes batches off
the deque and hands them to the exporter. The thread wakes when a batch is full, when ``batch_delay`` has
passed, or when a flush or shutdown is asked for. Network time is spent only
on that thread, never in the application's.

When the deque is full the `Overflow` policy decides, and every decision is
counted in `DispatchStats`:

``block``
    wait up to ``block_timeout`` seconds for room, then drop the record
    (counted as ``dropped``);
``drop_newest``
    drop the incoming record;
``drop_oldest``
    evict the oldest queued record to make room (OpenTelemetry's choice);
``spill``
    write the incoming record straight to the fallback exporter, in the calling
    thread (a local file, so disk time, never network time).

Records an export fails on go to the fallback exporter (``spilled``) or, when
there is none or it fails too, are counted as ``failed``.

Fork safety follows the OpenTelemetry SDK: the child starts with an empty
queue and a fresh worker (the records queued before the fork belong to the
parent, whose worker still delivers them), so nothing is sent twice and
nothing is lost.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Overflow
from .exceptions import ConfigError
from .exporters.base import Exporter, ExportResult, Outcome, PartialFailure
from .inflight import InFlight
from .record import Record
from .report import Reporter

__all__ = ["DispatchStats", "Dispatcher"]

#: Seconds between looks at the oldest in-flight batch while the worker waits for a full batch to begin
#: (the outcomes of acknowledged batches are collected then, or when the next batch is begun).
_SERVE_EVERY = 0.02

#: Longest a log call waits for the worker to finish collecting delivery reports (`Dispatcher._serve`).
_SERVE_WAIT = 0.005


@dataclass(frozen=True)
class DispatchStats:
    """Counters of one dispatcher, as of one moment.

    ``submitted = sent + spilled + failed + dropped + queued + in_flight``.
    ``waiting`` is apart from that sum: records in the fallback spool (of
    this process and earlier ones) not yet replayed into the exporter.
    """

    exporter: str
    submitted: int
    sent: int
    dropped: int
    spilled: int
    failed: int
    queued: int
    in_flight: int
    waiting: int = 0


class Dispatcher:
    """Queue, worker thread and overflow policy in front of one exporter.

    *fallback* is called from the worker and, with the spill policy, from
    application threads: it must be thread-safe (`Serialized` makes it so).
    """

    _stopped: bool

    def __init__(
        self,
        exporter: Exporter,
        *,
        name: str = "",
        fallback: Exporter | None = None,
        queue_size: int = 20_000,
        batch_size: int = 512,
        batch_delay: float = 0.2,
        overflow: Overflow = "block",
        block_timeout: float = 0.05,
    ) -> None:
        if overflow == "spill" and fallback is None:
            raise ConfigError("LOGPIPE_OVERFLOW=spill needs a fallback exporter (LOGPIPE_FALLBACK_EXPORTER)")
        self.name = name or type(exporter).__name__
        self.exporter = exporter
        self.fallback = fallback
        self._max = queue_size
        self._batch_size = batch_size
        self._batch_delay = batch_delay
        self._overflow = overflow
        self._block_timeout = block_timeout
        self._init_state()
        self._submitted = self._sent = self._dropped = self._spilled = self._failed = 0
        #: Tells a human on stderr, at most every 10 s per dispatcher.
        self._report = Reporter(f"{self.name}: ")
        self._start_worker()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(ref, "_after_fork_in_child"))

    @property
    def overflow(self) -> Overflow:
        """The full-queue policy in force (`LOGPIPE_OVERFLOW`, or its default for this exporter)."""
        return self._overflow

    # -- the application's side ------------------------------------------------

    def submit(self, record: Record) -> bool:
        """Queue *record*; False when the overflow policy did not queue it."""
        with self._lock:
            self._submitted += 1
            if self._stopped:
                self._dropped += 1
                return False
            if len(self._queue) >= self._max and not self._make_room():
                if self._overflow != "spill":
                    self._dropped += 1
                    return False
                spill = True
            else:
                spill = False
                self._queue.append(record)
                self._enqueued += 1
                if len(self._queue) == self._batch_size:
                    # Once per batch: the worker re-checks the length before it waits, so a
                    # queue already past the batch size needs no more wake-ups (each costs a
                    # Condition.notify, ~0.4 us, on every call until the worker gets the GIL).
                    self._wake.notify()
        if spill:
            self._to_fallback([record])
        elif self._serving and threading.get_ident() != self._worker_id:
            self._served.wait(_SERVE_WAIT)  # see _serve: not a wait on the network
        return not spill

    def _make_room(self) -> bool:
        """Apply the overflow policy with the lock held; True when there is room."""
        if self._overflow == "drop_oldest":
            self._queue.popleft()
            self._dropped += 1
            self._done += 1
            return True
        if self._overflow == "block":
            deadline = time.monotonic() + self._block_timeout
            self._room_waiters += 1
            try:
                while len(self._queue) >= self._max and not self._stopped:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._room.wait(left):
                        break
            finally:
                self._room_waiters -= 1
            return len(self._queue) < self._max and not self._stopped
        return False

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Export everything queued before this call; True when done in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._enqueued
            self._flushing += 1
            self._wake.notify()
            try:
                while self._done < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._worker.is_alive():
                        return False
                    self._drained.wait(left)
            finally:
                self._flushing -= 1
        left = max(0.0, deadline - time.monotonic())
        ok = self.exporter.force_flush(left)
        if self.fallback is not None:
            ok = self.fallback.force_flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def shutdown(self, timeout: float = 10.0) -> None:
        """Drain the queue, stop the worker, shut the exporters down."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._wake.notify()
            self._room.notify_all()
        self._worker.join(timeout)
        left = max(0.0, deadline - time.monotonic())
        self.exporter.shutdown(left)
        if self.fallback is not None:
            self.fallback.shutdown(max(0.0, deadline - time.monotonic()))

    def stats(self) -> DispatchStats:
        waiting = self._waiting()
        with self._lock:
            return DispatchStats(
                exporter=self.name,
                submitted=self._submitted,
                sent=self._sent,
                dropped=self._dropped,
                spilled=self._spilled,
                failed=self._failed,
                queued=len(self._queue),
                in_flight=self._in_flight,
                waiting=waiting,
            )

    def _waiting(self) -> int:
        """Records waiting in the fallback for later delivery; 0 when it cannot be read."""
        if self.fallback is None:
            return 0
        try:
            return self.fallback.backlog()
        except Exception:  # a stats call never raises for a spool being rewritten underneath
            return 0

    # -- the worker's side --------------------------------------------------------

    def _init_state(self) -> None:
        self._queue: deque[Record] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._room_waiters = 0
        self._flushing = 0
        self._enqueued = 0
        self._done = 0
        self._in_flight = 0
        self._stopped = False
        #: The worker is collecting delivery reports (`_serve`); `submit` waits for it to finish.
        self._serving = False
        self._served = threading.Event()
        self._served.set()
        self._worker_id = 0

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._run, name=f"logpipe-{self.name}", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        """Take batches off the queue and export them, several at once when the exporter pipelines.

        A thin user of `InFlight`: with ``max_in_flight`` of 1 this is
        stop-and-wait; with more, full batches are begun while earlier ones
        are still on the wire, and outcomes are settled oldest first. While
        more could be begun, a `Pollable` oldest flight (the Kafka exporter's)
        is only looked at, and the worker waits for the queue instead: a full
        batch is begun the moment the application fills it (`submit` wakes
        the worker), not after the oldest flight's acknowledgements; the
        outcomes already in are collected at least every ``_SERVE_EVERY``
        seconds. A partial batch is only begun once nothing is in flight (or
        on flush and shutdown), so a trickle of records still leaves after
        ``batch_delay``.
        """
        self._worker_id = threading.get_ident()
        flights: InFlight[Sequence[Record], Outcome] = InFlight(
            max(1, self.exporter.max_in_flight),
            failed=ExportResult.FAILURE,
            commit=self._committed,
            report=self._report,
        )
        while True:
            batch = self._take(flights)
            if batch:
                flights.begin(batch, functools.partial(self.exporter.begin, batch))
            elif len(flights):
                if not flights.full and not (self._flushing or self._stopped) and flights.pollable:
                    settled = self._serve(flights)
                    if settled is None:  # the oldest flight is still out: wait for a full batch meanwhile
                        self._await_batch(_SERVE_EVERY)
                        continue
                else:
                    settled = flights.settle()
                    assert settled is not None
                self._count(*settled)
                flights.acknowledge(settled[0])
            elif self._stopped_and_empty():
                return

    def _take(self, flights: InFlight[Sequence[Record], Outcome]) -> list[Record]:
        """The next batch to begin (maybe empty), waiting up to batch_delay when there is nothing to do."""
        with self._lock:
            if (
                not len(flights)
                and not self._stopped
                and (not self._queue or (len(self._queue) < self._batch_size and not self._flushing))
            ):
                # An empty queue waits even while flushing: what the flush waits for is done, and
                # looping here would only keep the flusher from the GIL until it notices.
                self._wake.wait(self._batch_delay)
            full = len(self._queue) >= self._batch_size
            if flights.full or not (full or not len(flights) or self._flushing or self._stopped):
                return []
            take = min(self._batch_size, len(self._queue))
            if take == len(self._queue):  # the usual case: all of it, at C speed
                batch = list(self._queue)
                self._queue.clear()
            else:
                pop = self._queue.popleft
                batch = [pop() for _ in range(take)]
            self._in_flight += take
            if take and self._room_waiters:
                self._room.notify_all()
            return batch

    def _serve(self, flights: InFlight[Sequence[Record], Outcome]) -> tuple[Sequence[Record], Outcome] | None:
        """Collect the outcomes already in (``settle(0)``); the oldest flight's batch and outcome if it is done.

        The client may need the GIL once per record for that (confluent-kafka runs a delivery report
        callback per message, and takes the GIL for each one even without a callback). A logging
        thread that holds the GIL takes it back between two reports, and each hand-over costs both
        threads a context switch: a batch's reports then took milliseconds of ping-pong instead of
        one run (on a quiet 2-core machine, ~400 context switches of the worker per 1,000 log calls).
        So `submit` waits for this to end, the way it waits for the GIL while the worker hands a batch
        over: a few hundred microseconds, at most ``_SERVE_WAIT`` (the only network operation here is
        the broker probe of a batch unacknowledged for 0.5 s, which the log call does not wait out).
        """
        self._served.clear()
        self._serving = True
        try:
            return flights.settle(0.0)
        finally:
            self._serving = False
            self._served.set()

    def _await_batch(self, timeout: float) -> None:
        """Wait up to *timeout* seconds for a full batch, a flush or a shutdown (`submit` notifies)."""
        with self._lock:
            if len(self._queue) < self._batch_size and not (self._flushing or self._stopped):
                self._wake.wait(timeout)

    def _stopped_and_empty(self) -> bool:
        """Stopped with nothing queued: wake the flushers one last time; True when the worker may end."""
        with self._lock:
            if self._stopped and not self._queue:
                self._drained.notify_all()
                return True
            return False

    def _count(self, batch: Sequence[Record], outcome: Outcome) -> None:
        """Count what *batch* delivered; hand the rest to the fallback."""
        if outcome is ExportResult.SUCCESS:
            failed: Sequence[Record] = ()
        elif isinstance(outcome, PartialFailure):
            failed = outcome.failed
        else:
            failed = batch
        with self._lock:
            self._sent += len(batch) - len(failed)
        if failed:
            self._to_fallback(failed)

    def _committed(self, batches: list[Sequence[Record]]) -> None:
        """The engine's commit hook: these batches are accounted for; flushers waiting on them may go."""
        done = sum(len(b) for b in batches)
        with self._lock:
            self._in_flight -= done
            self._done += done
            if self._flushing:
                self._drained.notify_all()

    def _to_fallback(self, records: Sequence[Record]) -> None:
        """Hand *records* to the fallback exporter; count them spilled or failed."""
        ok = False
        if self.fallback is not None:
            try:
                ok = self.fallback.export(records) is ExportResult.SUCCESS
            except Exception as exc:
                self._report(f"fallback export raised {type(exc).__name__}: {exc}")
        with self._lock:
            if ok:
                self._spilled += len(records)
            else:
                self._failed += len(records)
        if not ok:
            self._report(f"{len(records)} record(s) could not be delivered")

    def _after_fork_in_child(self) -> None:
        stopped = self._stopped
        self._init_state()
        self._stopped = stopped
        self._submitted = self._sent = self._dropped = self._spilled = self._failed = 0
        self.exporter.after_fork()
        if self.fallback is not None:
            self.fallback.after_fork()
        if not stopped:
            self._start_worker()


def _call(ref: weakref.ref[Dispatcher], method: str) -> None:
    target = ref()
    if target is not None:
        getattr(target, method)()
