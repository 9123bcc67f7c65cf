"""The one in-flight engine: begin up to N deliveries, settle them oldest first, commit the acknowledged front.

Every part of logpipe that moves records somewhere has the same problem. The
destination is fastest with several batches on the wire at once (Kafka's
producer, bulk requests to Elasticsearch), but progress may only be recorded
for a prefix of what was read: the dispatcher's counters and its hand-over to
the fallback, the tailer's file offsets, the shipper's Kafka offsets and the
spool's replay offsets all move forward only past batches that are fully
accounted for, and every batch before them too. Otherwise a crash would skip
records that were never delivered.

`InFlight` is that mechanism, written once (the OpenTelemetry SDK's
``BatchProcessor`` is the model: one engine, thin users):

* `InFlight.begin` starts a delivery of a batch (a *flight*) while fewer than
  ``limit`` flights are out; a batch may fly again (a retry of the records a
  destination did not take) and keeps its place in the commit order;
* `InFlight.settle` waits for the oldest flight and returns its outcome; what
  to do with the outcome (count, retry, dead-letter) is the user's business;
* `InFlight.acknowledge` marks a batch fully accounted for; the longest
  acknowledged prefix of batches is removed and handed to the *commit* hook.

A delivery in progress is a `Pending`: anything with ``wait()``. `Done` is
one whose outcome is known at once; `Deferred` wraps a
`concurrent.futures.Future` (work on a pool thread). A pending that can also
be waited for with a timeout (a `Pollable`: ``ready(timeout)``, as
`Deferred` and the Kafka exporter's batches are) lets its user do other work
while it waits: keep a consumer alive, or begin the next batch as soon as
one is ready instead of after the oldest one's acknowledgements.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["Deferred", "Done", "InFlight", "Pending", "Pollable"]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
B = TypeVar("B")


class Pending(Protocol[R_co]):
    """A delivery whose outcome is not known yet."""

    def wait(self) -> R_co:
        """Block until the delivery is done or given up on; its outcome."""
        ...


class Pollable(Pending[R_co], Protocol):
    """A `Pending` that can also be waited for with a timeout."""

    def ready(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds (0: only look) for the outcome; True when ``wait()`` will not block."""
        ...


@dataclass(frozen=True)
class Done(Generic[R]):
    """A `Pending` whose outcome was known when it was made (a synchronous delivery)."""

    outcome: R

    def wait(self) -> R:
        return self.outcome


class Deferred(Generic[R]):
    """A `Pending` backed by a `concurrent.futures.Future`: work running on a pool thread."""

    __slots__ = ("future",)

    def __init__(self, future: concurrent.futures.Future[R]) -> None:
        self.future = future

    def wait(self) -> R:
        return self.future.result()

    def ready(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the outcome; True when it is there."""
        concurrent.futures.wait([self.future], timeout)
        return self.future.done()


class _Entry(Generic[B]):
    """A batch in commit order, and whether it is accounted for."""

    __slots__ = ("acknowledged", "batch", "flying")

    def __init__(self, batch: B) -> None:
        self.batch = batch
        self.flying = 0
        self.acknowledged = False


class InFlight(Generic[B, R]):
    """Up to *limit* flights out at once, settled oldest first; the acknowledged front goes to *commit*.

    *failed* is the outcome given for a flight whose start or wait raised
    (an exporter bug must not stop the loop that drives it); *report* hears
    about such exceptions. Not thread-safe: one loop owns one InFlight.
    """

    def __init__(
        self,
        limit: int,
        *,
        failed: R,
        commit: Callable[[list[B]], object] | None = None,
        report: Callable[[str], object] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        self.limit = limit
        self._failed = failed
        self._commit = commit
        self._report = report
        self._flights: deque[tuple[_Entry[B], Pending[R]]] = deque()
        self._ledger: deque[_Entry[B]] = deque()
        self._entries: dict[int, _Entry[B]] = {}

    # -- state ------------------------------------------------------------------------

    def __len__(self) -> int:
        """Flights out (begun and not settled)."""
        return len(self._flights)

    @property
    def full(self) -> bool:
        """No flight may begin before one is settled."""
        return len(self._flights) >= self.limit

    @property
    def open(self) -> int:
        """Batches begun and not yet acknowledged (in flight, or waiting for a retry)."""
        return len(self._ledger)

    @property
    def pollable(self) -> bool:
        """The oldest flight is a `Pollable`: ``settle(timeout)`` waits at most *timeout* for it."""
        return bool(self._flights) and hasattr(self._flights[0][1], "ready")

    def batches(self) -> Iterator[B]:
        """The open batches, oldest first."""
        return (entry.batch for entry in list(self._ledger))

    def flying(self, batch: B) -> bool:
        """*batch* has a flight out."""
        entry = self._entries.get(id(batch))
        return entry is not None and entry.flying > 0

    # -- moving -----------------------------------------------------------------------

    def begin(self, batch: B, start: Callable[[], Pending[R]]) -> None:
        """Start a flight of *batch* with ``start()``; a new batch takes the next place in commit order."""
        entry = self._entries.get(id(batch))
        if entry is None:
            entry = self._entries[id(batch)] = _Entry(batch)
            self._ledger.append(entry)
        try:
            pending = start()
        except Exception as exc:
            self._tell(exc)
            pending = Done(self._failed)
        entry.flying += 1
        self._flights.append((entry, pending))

    def settle(self, timeout: float | None = None) -> tuple[B, R] | None:
        """Wait for the oldest flight; its batch and outcome, or None when none is out.

        With *timeout*, a `Pollable` flight (one with ``ready``) that is not
        done within it is left out and None returned (other `Pending` kinds
        are waited for in full).
        """
        if not self._flights:
            return None
        entry, pending = self._flights[0]
        ready = getattr(pending, "ready", None) if timeout is not None else None
        if ready is not None:
            try:
                if not ready(timeout):
                    return None
            except Exception as exc:  # like a raising wait(): the failed outcome, the loop goes on
                self._tell(exc)
                pending = Done(self._failed)
        self._flights.popleft()
        entry.flying -= 1
        try:
            outcome = pending.wait()
        except Exception as exc:
            self._tell(exc)
            outcome = self._failed
        return entry.batch, outcome

    def acknowledge(self, batch: B) -> list[B]:
        """*batch* is accounted for; commit and return the acknowledged front (maybe empty)."""
        entry = self._entries.get(id(batch))
        if entry is None:
            raise KeyError("acknowledge() of a batch that was never begun (or already committed)")
        entry.acknowledged = True
        front: list[B] = []
        while self._ledger and self._ledger[0].acknowledged and not self._ledger[0].flying:
            done = self._ledger.popleft()
            del self._entries[id(done.batch)]
            front.append(done.batch)
        if front and self._commit is not None:
            self._commit(front)
        return front

    def _tell(self, exc: Exception) -> None:
        if self._report is not None:
            self._report(f"delivery raised {type(exc).__name__}: {exc}")
