"""The exporter contract every destination implements.

Modelled on the OpenTelemetry SDK's exporters: three methods, called only from
one dispatcher worker thread (never from the thread that logs), so an exporter
may block on I/O and need not be thread-safe.
"""

from __future__ import annotations

import abc
import enum
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..inflight import Done, Pending  # the pending/done pair of the engine that drives every exporter
from ..record import Record

__all__ = ["Done", "ExportResult", "Exporter", "NoOptions", "Outcome", "PartialFailure", "Pending", "Serialized"]


class ExportResult(enum.Enum):
    """Outcome of one `Exporter.export` call."""

    #: Every record was delivered (or durably handed to the destination).
    SUCCESS = "success"
    #: Nothing in the batch can be counted as delivered; the dispatcher sends
    #: the whole batch to the fallback exporter.
    FAILURE = "failure"


@dataclass(frozen=True)
class PartialFailure:
    """Some records of a batch were not delivered; only these go to the fallback."""

    failed: Sequence[Record]


#: What `Exporter.export` returns and a `Pending` of an exporter's gives.
Outcome = ExportResult | PartialFailure


@dataclass(frozen=True)
class NoOptions:
    """Settings of an exporter that has none."""


class Exporter(abc.ABC):
    """Sends batches of encoded records to one destination.

    Subclasses set `Options` to a dataclass declared with
    `logpipe.config.setting`; logpipe fills it from ``LOGPIPE_<NAME>_<SETTING>``
    and arguments, then calls ``cls(options)``. Register the class under the
    ``logpipe.exporters`` entry-point group to make it selectable by name.

    Exceptions raised by `export` are caught by the dispatcher and treated as
    `ExportResult.FAILURE`; an exporter should still retry transient errors
    itself, within its own budget, before giving up on a batch.

    Pipelining: an exporter whose client can have several batches on the wire
    (Kafka's producer keeps sending while earlier batches await their
    acknowledgements) overrides `begin` and sets `max_in_flight` above 1. The
    dispatcher then begins up to that many batches before it waits for the
    oldest, and waits for them in the order begun, so delivery counters and
    the fallback hand-over stay exact while the network stays busy.

    Exporters survive ``os.fork``: the dispatcher calls `after_fork` in the
    child, before the child's first export, so connections are re-made there.
    """

    Options: ClassVar[type[Any]] = NoOptions
    #: Exporter used when ``LOGPIPE_FALLBACK_EXPORTER=auto``: None for local
    #: destinations (a file), the spool for network ones.
    default_fallback: ClassVar[str | None] = None

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    #: Batches the dispatcher may have begun and not yet waited for.
    max_in_flight: int = 1
    #: Where this exporter runs when ``LOGPIPE_ISOLATION=auto``: ``process`` for
    #: exporters whose client does heavy Python work in background threads (it
    #: would compete with the application for the GIL), ``thread`` otherwise.
    #: An instance may decide (the Kafka exporter does, by its client library).
    isolation: Literal["thread", "process"] = "thread"

    @abc.abstractmethod
    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        """Deliver *batch*, in order."""

    def begin(self, batch: Sequence[Record]) -> Pending[Outcome]:
        """Start delivering *batch*; ``wait()`` on the result gives its outcome.

        The default exports at once. Exceptions from `begin` or ``wait`` count
        as `ExportResult.FAILURE` for the whole batch.
        """
        return Done(self.export(batch))

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Push out anything buffered; True when done within *timeout* seconds."""
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Flush and release resources; `export` is not called afterwards."""

    def after_fork(self) -> None:
        """Reset per-process state (sockets, client threads) in a forked child."""

    def bind_primary(self, name: str, primary: Exporter) -> None:
        """Called once when this exporter becomes the fallback of *primary*.

        Each primary gets its own fallback instance, so a spool can keep one
        directory per primary and replay into it when it recovers.
        """

    def describe(self) -> str:
        """Where records go, for humans (``logpipe demo`` prints it)."""
        return type(self).__name__

    def backlog(self) -> int:
        """Records this exporter holds for later delivery (a spool's waiting records); 0 for most."""
        return 0

    def backlog_hint(self) -> str:
        """Where the `backlog` waits and how to send it now, for the line printed at exit; "" for most."""
        return ""


class Serialized(Exporter):
    """Wraps an exporter so calls from several threads take turns.

    Used for the fallback exporter, which every dispatcher of a fan-out and
    the application threads (spill policy) may call at once.
    """

    def __init__(self, inner: Exporter) -> None:
        super().__init__(inner.options)
        self.inner = inner
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        with self._lock:
            return self.inner.export(batch)

    def force_flush(self, timeout: float = 10.0) -> bool:
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            return self.inner.force_flush(timeout)
        finally:
            self._lock.release()

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._lock:
            self.inner.shutdown(timeout)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.inner.after_fork()

    def bind_primary(self, name: str, primary: Exporter) -> None:
        self.inner.bind_primary(name, primary)

    def describe(self) -> str:
        return self.inner.describe()

    def backlog(self) -> int:
        return self.inner.backlog()

    def backlog_hint(self) -> str:
        return self.inner.backlog_hint()
