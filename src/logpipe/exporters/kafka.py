"""The ``kafka`` exporter: each record one Kafka message, through confluent-kafka or kafka-python.

The message value is the record's KafkaLog JSON, byte for byte, so the seed's
Logstash pipeline (``codec => json``) reads it unchanged; headers carry ``id``
and, when there is one, ``trace_id``; the key is chosen by ``key``.

The client library is ``LOGPIPE_KAFKA_CLIENT``: confluent-kafka (librdkafka,
whose C threads do not hold the GIL, so the exporter runs in the
application's process) when installed, else kafka-python (pure Python, run
in a child process under ``LOGPIPE_ISOLATION=auto``: `isolation` follows the
client). Each is a `kafka_producer.Producer` backend; everything else here
is shared.

Delivery is at-least-once, idempotent with ``acks=all``. `begin` hands a
batch to the producer and its ``wait`` collects every record's
acknowledgement within ``delivery_timeout`` (the dispatcher keeps
``in_flight_batches`` batches begun, so the producer never idles while a
batch awaits its acks; ``ready(timeout)`` collects what is in without waiting
it out, so the dispatcher can begin the next batch meanwhile); the client
retries retriable errors (leader moves, timeouts, a restarting broker) inside
that budget. Whatever is not acknowledged is reported back (`PartialFailure`),
so the dispatcher spools exactly those records; a record acknowledged by a
broker whose answer was lost can therefore arrive twice. Consumers de-duplicate
on ``Id``.

Outages are detected, not waited out: the producer is created lazily (a
broker that is down at start-up neither fails `logpipe.configure` nor blocks
the application), and while a batch is outstanding the bootstrap addresses
are probed with a plain TCP connect. When none accepts, the broker is
*down*: the producer is discarded (the client stops reconnecting in the
background), unacknowledged records are handed back at once, and for
``down_backoff`` seconds `export` answers FAILURE without touching the
network, so records flow to the spool at disk speed. Then the next export
probes again.

Settings and the producer configuration live in `kafka_options`, outage
detection (the down-breaker) in `kafka_outage`, the two client backends in
`kafka_python_producer` and `kafka_confluent_producer`.

Nothing here logs through `logging` or structlog, which may be what feeds
this exporter; problems go to stderr, once per outage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..kafkaerrors import explain, failure_message
from ..record import Record
from .base import Done, Exporter, ExportResult, Outcome, PartialFailure, Pending
from .kafka_options import Compression, KafkaOptions, KeyChoice, client_library, connection
from .kafka_outage import Breaker, describe, fatal, record_specific, report, retriable
from .kafka_producer import Flight, Producer, client_config, open_producer

__all__ = ["Compression", "KafkaExporter", "KafkaOptions", "KafkaStats", "KeyChoice"]

#: How often an outstanding batch checks that the broker still accepts connections.
_PROBE_EVERY = 0.5


@dataclass(frozen=True)
class KafkaStats:
    """Counters of one exporter: records acknowledged and not, outages, producers made."""

    sent: int
    failed: int
    outages: int
    producers: int


class KafkaExporter(Exporter):
    """Sends records to one Kafka topic; safe to call from several threads at once."""

    Options = KafkaOptions
    options: KafkaOptions
    default_fallback: ClassVar[str | None] = "spool"

    def __init__(self, options: KafkaOptions | None = None) -> None:
        super().__init__(options)
        #: The client library in use: ``confluent-kafka`` or ``kafka-python``.
        self.client = client_library(self.options)
        self._config = client_config(self.client, self.options)
        self._connection = connection(self.options)
        self._addresses = self._connection.addresses()
        self.max_in_flight = self.options.in_flight_batches
        #: librdkafka's threads are C threads: no need for a child process to keep them off the GIL.
        self.isolation: Literal["thread", "process"] = "thread" if self.client == "confluent-kafka" else "process"
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # producer and breaker state
        self._counts_lock = threading.Lock()
        self._producer: Producer | None = None
        o = self.options
        self._breaker = Breaker(
            self._addresses, connect_timeout=o.connect_timeout, down_backoff=o.down_backoff, name=o.bootstrap_servers
        )
        self._closed = False
        self._sent = self._failed = self._producers = 0

    # -- the exporter contract -------------------------------------------------

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        """Send *batch*; SUCCESS, the records not acknowledged, or FAILURE when none could go.

        FAILURE means the destination is unavailable (down, no producer, every
        record timed out). A `PartialFailure` naming the whole batch means the
        broker refused these particular records (too large, invalid).
        """
        return self.begin(batch).wait()

    def begin(self, batch: Sequence[Record]) -> Pending[Outcome]:
        """Hand *batch* to the producer and return at once; ``wait()`` collects the acknowledgements.

        The producer keeps sending while earlier batches await theirs, which
        is what keeps the broker busy at ``acks=all``.
        """
        producer = self._ready_producer()
        if producer is None:
            self._count(0, len(batch))
            return Done(ExportResult.FAILURE)
        return _InFlight(self, producer, batch, producer.send(self.options.topic, batch))

    def _outcome(
        self, producer: Producer, batch: Sequence[Record], flight: Flight, pending: bool
    ) -> ExportResult | PartialFailure:
        """Turn the fate of *flight*'s records into the batch's outcome (see `export`); *pending*: some
        records are still unresolved and given up on (out of budget, broker gone)."""
        failed, errors = flight.outcome(give_up=pending)
        self._count(len(batch) - len(failed), len(failed))
        if not failed:
            self._up()
            return ExportResult.SUCCESS
        if fatal(errors):
            self._discard(producer, f"producer reset after {describe(errors)}", down=False)
        elif pending or (len(failed) == len(batch) and all(retriable(e) for e in errors)):
            reason = "broker stopped accepting connections with records in flight" if pending else describe(errors)
            self._discard(producer, reason, down=True)
        if len(failed) == len(batch) and (pending or not record_specific(errors)):
            return ExportResult.FAILURE
        return PartialFailure(failed)

    def force_flush(self, timeout: float = 10.0) -> bool:
        # export waits for its own acknowledgements: nothing is left buffered between calls.
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout)

    def after_fork(self) -> None:
        """Forget the parent's producer: its sockets and sender threads belong to the parent."""
        producer = self._producer
        if producer is not None:
            producer.forget()
        closed = self._closed
        self._init_state()  # counters start at zero in the child, like the dispatcher's
        self._closed = closed

    def describe(self) -> str:
        return f"kafka {self.options.bootstrap_servers} topic {self.options.topic} ({self.client})"

    def stats(self) -> KafkaStats:
        with self._counts_lock:
            return KafkaStats(self._sent, self._failed, self._breaker.outages, self._producers)

    # -- producing ---------------------------------------------------------------

    def _ready_producer(self) -> Producer | None:
        """The producer, made now if needed; None while the broker counts as down."""
        with self._lock:
            if self._closed or self._breaker.open():
                return None
            if self._producer is not None:
                return self._producer
            if not self._reachable():
                self._breaker.trip("no broker accepts connections")
                return None
            try:
                producer = open_producer(self.client, self._config, self.options, self._client_error)
            except Exception as exc:  # NoBrokersAvailable, bootstrap timeout, a refused TLS or SASL handshake ...
                self._breaker.trip(f"cannot create producer: {self._why(exc)}")
                return None
            self._producer = producer
            self._producers += 1
            return producer

    def _why(self, exc: BaseException) -> str:
        """Why the producer could not be made; with TLS or SASL, the setting to fix (kafka-python words
        a wrong password, an untrusted CA and a host name mismatch all as "unable to bootstrap")."""
        security = self._connection.security
        if not (security.tls or security.sasl):
            return f"{type(exc).__name__}: {exc}"
        return failure_message(exc, self._connection, timeout=self.options.connect_timeout)

    def _client_error(self, error: Any) -> None:
        """An error the client reports on its own (librdkafka's error callback): one line on stderr,
        naming the setting to fix when the words say which (a wrong password, an untrusted CA ...)."""
        c = self._connection
        text = explain(error, c.prefix, c.security) or f"{error.name()}: {error.str()}"
        report(f"{self.describe()}: {text}")

    def _progress(self, waiting: _InFlight, timeout: float) -> bool:
        """Serve delivery reports for up to *timeout* seconds (0: those already in); True once *waiting*'s
        fate is known: every record resolved, or the rest given up on (``waiting.gave_up``).

        The delivery budget runs from the first call. A record still pending after the broker stopped
        accepting connections is given up on at once instead of at the end of the budget: the broker
        is probed after every `_PROBE_EVERY` seconds spent waiting in vain, so a batch acknowledged
        within them costs no connect.
        """
        flight = waiting.flight
        now = time.monotonic()
        if waiting.deadline is None:
            waiting.deadline = now + self.options.delivery_timeout + 1.0
            waiting.probe_at = now + _PROBE_EVERY
        end = now + timeout
        polled = False
        while not flight.done():
            if now >= waiting.deadline:
                waiting.gave_up = True
                return True
            if now >= waiting.probe_at:
                waiting.probe_at = now + _PROBE_EVERY
                if self._producer is not waiting.producer or not self._reachable():
                    waiting.gave_up = True
                    return True
            if polled and now >= end:
                return False
            flight.await_progress(max(0.0, min(end, waiting.probe_at, waiting.deadline) - now))
            polled = True
            now = time.monotonic()
        waiting.gave_up = False
        return True

    def _reachable(self) -> bool:
        """Some bootstrap address accepts a TCP connection (the breaker's probe)."""
        return self._breaker.reachable()

    # -- state ---------------------------------------------------------------------

    def _up(self) -> None:
        if self._breaker.down:
            with self._lock:
                self._breaker.recovered()

    def _discard(self, producer: Producer, reason: str, *, down: bool) -> None:
        """Stop using *producer*: its unacknowledged records fail now, a new one is made later."""
        with self._lock:
            if self._producer is producer:
                self._producer = None
            if down:
                self._breaker.trip(reason)
        producer.abort()

    def _count(self, sent: int, failed: int) -> None:
        with self._counts_lock:
            self._sent += sent
            self._failed += failed


class _InFlight:
    """One batch handed to the producer, its acknowledgements not collected yet (a `Pollable`)."""

    __slots__ = ("batch", "deadline", "exporter", "flight", "gave_up", "probe_at", "producer")

    def __init__(self, exporter: KafkaExporter, producer: Producer, batch: Sequence[Record], flight: Flight) -> None:
        self.exporter = exporter
        self.producer = producer
        self.batch = batch
        self.flight = flight
        #: When waiting gives up on records still pending, and when the broker is probed next (set by
        #: the first wait), and whether it gave up (None: the fate of some records is not known yet).
        self.deadline: float | None = None
        self.probe_at = 0.0
        self.gave_up: bool | None = None

    def ready(self, timeout: float) -> bool:
        return self.gave_up is not None or self.exporter._progress(self, timeout)

    def wait(self) -> ExportResult | PartialFailure:
        while not self.ready(_PROBE_EVERY):
            pass
        return self.exporter._outcome(self.producer, self.batch, self.flight, bool(self.gave_up))
