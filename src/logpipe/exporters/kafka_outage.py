"""Outage detection for the Kafka exporter: what a failure means, and the down-breaker.

Both client libraries keep retrying a broker that is gone until each
record's delivery budget runs out, which would hold every batch for
``delivery_timeout`` seconds during an outage. The exporter instead asks two
questions: is this failure about the broker, the producer or one record
(each producer backend classifies its library's errors as a `Failure`;
`fatal`, `record_specific`, `retriable` read them), and does any bootstrap address
still accept a TCP connection (`Breaker.reachable`)? When none does, the
`Breaker` opens: for ``down_backoff`` seconds the exporter fails at once,
without touching the network, so records flow to the spool at disk speed.

The down delay is deliberately fixed, not a `logpipe.backoff.Backoff`: its
contract (the ``down_backoff`` setting, "fails at once for that many
seconds, then probes again") is documented and tested; a probe is one TCP
connect, cheap enough that doubling would only delay noticing a broker
that is back. Outages are announced once each on stderr, never through
`logging` (which may be what feeds this exporter).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Literal, NamedTuple

from ..report import Reporter

__all__ = ["Breaker", "Failure", "FailureKind", "describe", "fatal", "record_specific", "retriable"]

#: What a failure is about, in both client libraries' common terms: the producer (``fatal``: its
#: idempotence state or fencing, make a new one), one ``record`` (too large, invalid: retrying will
#: not help), the broker (``retriable``: down, timed out, leader moved), or something ``other``.
FailureKind = Literal["fatal", "record", "retriable", "other"]


class Failure(NamedTuple):
    """Why one record (or the rest of a batch) was not acknowledged; each producer backend classifies
    its library's errors into this, so the outage logic here is written once for both."""

    kind: FailureKind
    #: ``ErrorName: text``, for one line on stderr.
    text: str


def fatal(errors: Sequence[Failure]) -> bool:
    """Some error leaves the producer unusable: make a new one."""
    return any(e.kind == "fatal" for e in errors)


def record_specific(errors: Sequence[Failure]) -> bool:
    """Every error is about its record (too large, invalid): the broker is fine, the records are not."""
    return bool(errors) and all(e.kind == "record" for e in errors)


def retriable(error: Failure) -> bool:
    return error.kind == "retriable"


def describe(errors: Sequence[Failure]) -> str:
    """The first error, and how many more there were, for one line on stderr."""
    if not errors:
        return "unknown error"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{errors[0].text}{more}"


class Breaker:
    """Open (fail fast) for *down_backoff* seconds after the broker was found unreachable.

    Not locked: the exporter calls it with its own lock held, since the
    breaker and the producer change together.
    """

    def __init__(
        self, addresses: Sequence[tuple[str, int]], *, connect_timeout: float, down_backoff: float, name: str
    ) -> None:
        self.addresses = list(addresses)
        self.connect_timeout = connect_timeout
        self.down_backoff = down_backoff
        self.name = name
        #: Outages seen (each counted once, however long it lasts).
        self.outages = 0
        self._until: float | None = None
        self._down = False
        self._announced = False

    @property
    def down(self) -> bool:
        """An outage was detected and no delivery succeeded since."""
        return self._down

    def open(self) -> bool:
        """Within the fail-fast window: do not touch the network."""
        return self._until is not None and time.monotonic() < self._until

    def reachable(self) -> bool:
        """True when some bootstrap address accepts a TCP connection within connect_timeout."""
        for host, port in self.addresses:
            try:
                socket.create_connection((host, port), timeout=self.connect_timeout).close()
            except OSError:
                continue
            return True
        return False

    def trip(self, reason: str) -> None:
        """Fail fast for down_backoff seconds; say so once per outage."""
        self._until = time.monotonic() + self.down_backoff
        if not self._down:
            self._down = True
            self.outages += 1
            self._announced = report(
                f"kafka {self.name} unavailable ({reason}); "
                f"records go to the fallback, retrying every {self.down_backoff:g}s"
            )

    def recovered(self) -> None:
        """A delivery succeeded: the outage (if any) is over."""
        if self._down:
            self._down = False
            if self._announced:
                report(f"kafka {self.name} reachable again", force=True)


#: One line on stderr (never through logging, which may feed this exporter), at most one every 10 s
#: across all Kafka exporters unless forced, so a flapping broker cannot flood stderr.
report = Reporter()
