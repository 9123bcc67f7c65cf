"""The ``kafka`` exporter: each record one Kafka message, through kafka-python.

The message value is the record's KafkaLog JSON, byte for byte, so the seed's
Logstash pipeline (``codec => json``) reads it unchanged; headers carry ``id``
and, when there is one, ``trace_id``; the key is chosen by ``key``.

Delivery is at-least-once. `begin` hands a batch to the producer and its
``wait`` collects every record's acknowledgement within ``delivery_timeout``
(the dispatcher keeps ``in_flight_batches`` batches begun, so the producer
never idles while a batch awaits its acks); kafka-python retries
retriable errors (leader moves, timeouts, a restarting broker) inside that
budget. Whatever is not acknowledged is reported back (`PartialFailure`), so
the dispatcher spools exactly those records; a record acknowledged by a
broker whose answer was lost can therefore arrive twice. Consumers de-duplicate
on ``Id``.

Outages are detected, not waited out: the producer is created lazily (a
broker that is down at start-up neither fails `logpipe.configure` nor blocks
the application), and while a batch is outstanding the bootstrap addresses
are probed with a plain TCP connect. When none accepts, the broker is
*down*: the producer is discarded (kafka-python stops reconnecting in the
background), unacknowledged records are handed back at once, and for
``down_backoff`` seconds `export` answers FAILURE without touching the
network, so records flow to the spool at disk speed. Then the next export
probes again.

Nothing here logs through `logging` or structlog, which may be what feeds
this exporter; problems go to stderr, once per outage.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import kafka.codec
import kafka.errors
from kafka import KafkaProducer

from ..config import at_least, setting
from ..exceptions import ConfigError
from ..record import Record
from ..report import Reporter
from .base import Done, Exporter, ExportResult, Outcome, PartialFailure, Pending

__all__ = ["KafkaExporter", "KafkaOptions", "KafkaStats"]

KeyChoice = Literal["none", "service", "trace_id"]
Compression = Literal["none", "gzip", "lz4", "zstd", "snappy"]

#: The library each codec needs, and kafka-python's check that it is importable.
_CODECS: dict[str, tuple[str, Callable[[], bool]]] = {
    "gzip": ("gzip (standard library)", kafka.codec.has_gzip),
    "lz4": ("lz4", kafka.codec.has_lz4),
    "zstd": ("zstandard", kafka.codec.has_zstd),
    "snappy": ("python-snappy", kafka.codec.has_snappy),
}

#: How often an outstanding batch checks that the broker still accepts connections.
_PROBE_EVERY = 0.5

#: Failures that leave the producer itself unusable (idempotence state, fencing, closed).
_FATAL = tuple(
    getattr(kafka.errors, name)
    for name in (
        "IllegalStateError",
        "OutOfOrderSequenceNumberError",
        "UnknownProducerIdError",
        "InvalidProducerEpochError",
        "ProducerFencedError",
    )
    if hasattr(kafka.errors, name)
)

#: Failures of one record, not of the broker or the producer: retrying it elsewhere will not help.
_RECORD_ERRORS = tuple(
    getattr(kafka.errors, name)
    for name in ("MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidRecordError", "CorruptRecordError")
    if hasattr(kafka.errors, name)
)

#: Producers abandoned in a forked child: kept referenced so their finalizer never runs there.
_orphans: list[Any] = []


@dataclass(frozen=True)
class KafkaOptions:
    bootstrap_servers: str = setting("127.0.0.1:9092", "Comma list of host:port brokers to bootstrap from.")
    topic: str = setting("logpipe", "Topic every record is sent to (the seed design uses msproject_log).")
    key: KeyChoice = setting(
        "none", "Message key: none (spread over partitions), service or trace_id (per-trace order)."
    )
    acks: Literal["all", "1", "0"] = setting(
        "all", "Acknowledgement: all (idempotent, survives a leader change), 1 (leader only) or 0 (none)."
    )
    compression: Compression = setting("none", "Batch compression: none, gzip, lz4, zstd or snappy.")
    linger: float = setting(0.005, "Seconds the producer waits to fill a batch.", check=at_least(0))
    batch_bytes: int = setting(262144, "Most bytes in one producer batch (per partition).", check=at_least(1))
    max_request_bytes: int = setting(
        1048576, "Largest produce request; a bigger single record cannot be sent.", check=at_least(1)
    )
    retries: int = setting(
        2147483647, "Retries of a failed produce request (bounded in time by delivery_timeout).", check=at_least(0)
    )
    retry_backoff: float = setting(0.1, "Seconds between retries.", check=at_least(0))
    delivery_timeout: float = setting(
        10.0, "Seconds one batch may take, retries included, before its records are spooled.", check=at_least(0.001)
    )
    request_timeout: float = setting(
        5.0, "Seconds to wait for one broker response (and for topic metadata on send).", check=at_least(0.001)
    )
    connect_timeout: float = setting(
        2.0, "Seconds to connect and bootstrap before the broker counts as unreachable.", check=at_least(0.001)
    )
    down_backoff: float = setting(
        1.0,
        "Seconds export fails at once (records go to the spool) after the broker was unreachable.",
        check=at_least(0),
    )
    client_id: str = setting("logpipe", "Client id the broker sees (quotas, request logs).")
    in_flight_batches: int = setting(
        3,
        "Dispatcher batches handed to the producer before the oldest one's acknowledgements are awaited; "
        "1 is stop-and-wait.",
        check=at_least(1),
    )


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
    isolation: ClassVar[Literal["thread", "process"]] = "process"

    def __init__(self, options: KafkaOptions | None = None) -> None:
        super().__init__(options)
        self._config = _producer_config(self.options)
        self._addresses = _addresses(self.options.bootstrap_servers)
        self._key = _key_function(self.options.key)
        self.max_in_flight = self.options.in_flight_batches
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # producer and outage state
        self._counts_lock = threading.Lock()
        self._producer: Any = None
        self._down_until = 0.0
        self._down = False
        self._announced = False
        self._closed = False
        self._sent = self._failed = self._outages = self._producers = 0

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
        futures, unsent = self._send(producer, batch)
        return _InFlight(self, producer, batch, futures, unsent)

    def _outcome(
        self, producer: Any, batch: Sequence[Record], futures: Sequence[Any], unsent: BaseException | None
    ) -> ExportResult | PartialFailure:
        """Wait for *futures* and turn their fate into the batch's outcome (see `export`)."""
        pending = self._wait(producer, futures)
        failed = [r for r, f in zip(batch, futures, strict=False) if f.exception is not None or not f.is_done]
        failed += batch[len(futures) :]
        self._count(len(batch) - len(failed), len(failed))
        if not failed:
            self._up()
            return ExportResult.SUCCESS
        errors = [f.exception for f in futures if f.failed()] + ([unsent] if unsent is not None else [])
        if any(isinstance(e, _FATAL) for e in errors):
            self._discard(producer, f"producer reset after {_describe(errors)}", down=False)
        elif pending or (len(failed) == len(batch) and all(_retriable(e) for e in errors)):
            reason = "broker stopped accepting connections with records in flight" if pending else _describe(errors)
            self._discard(producer, reason, down=True)
        record_specific = not pending and bool(errors) and all(isinstance(e, _RECORD_ERRORS) for e in errors)
        if len(failed) == len(batch) and not record_specific:
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
            _close(producer, timeout)

    def after_fork(self) -> None:
        """Forget the parent's producer: its sockets and sender thread belong to the parent."""
        producer = self._producer
        if producer is not None:
            _unregister_atexit(producer)
            _orphans.append(producer)
        closed = self._closed
        self._init_state()  # counters start at zero in the child, like the dispatcher's
        self._closed = closed

    def describe(self) -> str:
        return f"kafka {self.options.bootstrap_servers} topic {self.options.topic}"

    def stats(self) -> KafkaStats:
        with self._counts_lock:
            return KafkaStats(self._sent, self._failed, self._outages, self._producers)

    # -- producing ---------------------------------------------------------------

    def _ready_producer(self) -> Any:
        """The producer, made now if needed; None while the broker counts as down."""
        with self._lock:
            if self._closed or time.monotonic() < self._down_until:
                return None
            if self._producer is not None:
                return self._producer
            if not self._reachable():
                self._mark_down("no broker accepts connections")
                return None
            try:
                producer = KafkaProducer(**self._config)
            except Exception as exc:  # NoBrokersAvailable, bootstrap timeout, ...
                self._mark_down(f"cannot create producer: {type(exc).__name__}: {exc}")
                return None
            _unregister_atexit(producer)  # shutdown() closes it, after logpipe's final flush
            self._producer = producer
            self._producers += 1
            return producer

    def _send(self, producer: Any, batch: Sequence[Record]) -> tuple[list[Any], BaseException | None]:
        """Hand the batch to the producer; stop at the first record it will not take."""
        topic = self.options.topic
        futures: list[Any] = []
        for record in batch:
            headers = [("id", record.id.encode())]
            if record.trace_id:
                headers.insert(0, ("trace_id", record.trace_id.encode()))
            try:
                future = producer.send(topic, value=record.payload, key=self._key(record), headers=headers)
            except kafka.errors.MessageSizeTooLargeError as exc:
                future = _failed_future(exc)  # this record can never go; the others still can
            except Exception as exc:  # metadata timeout, producer closed
                return futures, exc
            futures.append(future)
        return futures, None

    def _wait(self, producer: Any, futures: Sequence[Any]) -> bool:
        """Wait for every future within the delivery budget; True if some are still pending.

        Records resolve a producer batch at a time, so this waits on the latch
        of each pending record's batch (kafka-python's ``FutureProduceResult``)
        rather than putting a callback on every record: the sender thread, which
        shares the GIL with the application, does no per-record work for us.
        A pending future after the broker stopped accepting connections is
        given up on at once instead of at the end of the budget.
        """
        deadline = time.monotonic() + self.options.delivery_timeout + 1.0
        for future in reversed(futures):  # the last ones are usually the last to resolve
            while not future.is_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                _await(future, min(_PROBE_EVERY, left))
                # Probe only after waiting in vain: a batch acknowledged within the slice costs no connect.
                if not future.is_done and (self._producer is not producer or not self._reachable()):
                    return True
        return False

    def _reachable(self) -> bool:
        """True when some bootstrap address accepts a TCP connection within connect_timeout."""
        timeout = self.options.connect_timeout
        for host, port in self._addresses:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
            except OSError:
                continue
            return True
        return False

    # -- state ---------------------------------------------------------------------

    def _mark_down(self, reason: str) -> None:
        """With the lock held: fail fast for down_backoff seconds; say so once per outage."""
        self._down_until = time.monotonic() + self.options.down_backoff
        if not self._down:
            self._down = True
            self._outages += 1
            self._announced = _report(
                f"kafka {self.options.bootstrap_servers} unavailable ({reason}); "
                f"records go to the fallback, retrying every {self.options.down_backoff:g}s"
            )

    def _up(self) -> None:
        if self._down:
            with self._lock:
                if self._down:
                    self._down = False
                    if self._announced:
                        _report(f"kafka {self.options.bootstrap_servers} reachable again", force=True)

    def _discard(self, producer: Any, reason: str, *, down: bool) -> None:
        """Stop using *producer*: its unacknowledged records fail now, a new one is made later."""
        with self._lock:
            if self._producer is producer:
                self._producer = None
            if down:
                self._mark_down(reason)
        _abort(producer)

    def _count(self, sent: int, failed: int) -> None:
        with self._counts_lock:
            self._sent += sent
            self._failed += failed


# -- helpers -------------------------------------------------------------------------


def _producer_config(o: KafkaOptions) -> dict[str, Any]:
    """kafka-python settings for *o*; raises ConfigError for what kafka-python would refuse later."""
    if o.compression != "none":
        library, available = _CODECS[o.compression]
        if not available():
            raise ConfigError(
                f"LOGPIPE_KAFKA_COMPRESSION={o.compression}: the {library} library is not importable; "
                f"install it or choose another codec"
            )
    if o.delivery_timeout < o.linger + o.request_timeout:
        raise ConfigError(
            f"LOGPIPE_KAFKA_DELIVERY_TIMEOUT={o.delivery_timeout:g} must be at least "
            f"LOGPIPE_KAFKA_LINGER + LOGPIPE_KAFKA_REQUEST_TIMEOUT ({o.linger + o.request_timeout:g})"
        )
    addresses = _addresses(o.bootstrap_servers)
    if not addresses:
        raise ConfigError(f"LOGPIPE_KAFKA_BOOTSTRAP_SERVERS={o.bootstrap_servers!r}: expected host:port[,host:port]")
    idempotent = o.acks == "all" and o.retries > 0
    return {
        "bootstrap_servers": [f"{h}:{p}" for h, p in addresses],
        "client_id": o.client_id,
        "acks": "all" if o.acks == "all" else int(o.acks),
        "enable_idempotence": idempotent,
        "compression_type": None if o.compression == "none" else o.compression,
        "linger_ms": _ms(o.linger),
        "batch_size": o.batch_bytes,
        "max_request_size": o.max_request_bytes,
        "retries": o.retries,
        "retry_backoff_ms": _ms(o.retry_backoff),
        "delivery_timeout_ms": _ms(o.delivery_timeout),
        "request_timeout_ms": _ms(o.request_timeout),
        "max_block_ms": _ms(o.request_timeout),
        "bootstrap_timeout_ms": _ms(o.connect_timeout),
        "reconnect_backoff_max_ms": 1000,
    }


def _ms(seconds: float) -> int:
    """kafka-python takes whole milliseconds (its request encoder rejects floats)."""
    return int(round(seconds * 1000))


def _addresses(servers: str) -> list[tuple[str, int]]:
    """``"a:9092,[::1]:9093"`` -> ``[("a", 9092), ("::1", 9093)]``; bad entries raise ConfigError."""
    result = []
    for item in (s.strip() for s in servers.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"LOGPIPE_KAFKA_BOOTSTRAP_SERVERS: {item!r} is not host:port") from None
        result.append((host.strip("[]") or "localhost", number))
    return result


def _key_function(choice: KeyChoice) -> Callable[[Record], bytes | None]:
    if choice == "service":
        return lambda r: r.service.encode() if r.service else None
    if choice == "trace_id":
        return lambda r: r.trace_id.encode() if r.trace_id else None
    return lambda r: None


@dataclass(frozen=True)
class _InFlight:
    """One batch handed to the producer, its acknowledgements not collected yet."""

    exporter: KafkaExporter
    producer: Any
    batch: Sequence[Record]
    futures: Sequence[Any]
    unsent: BaseException | None

    def wait(self) -> ExportResult | PartialFailure:
        return self.exporter._outcome(self.producer, self.batch, self.futures, self.unsent)


def _await(future: Any, timeout: float) -> None:
    """Block until *future* may have resolved, at most *timeout* seconds.

    A record's future resolves when its producer batch does; kafka-python
    exposes that batch's latch (``_produce_future.wait``). Should a future
    lack it (another kafka-python version), a callback sets an event instead.
    """
    batch = getattr(future, "_produce_future", None)
    if batch is not None and hasattr(batch, "wait"):
        batch.wait(timeout)
        return
    done = threading.Event()
    future.add_both(lambda *_: done.set())
    done.wait(timeout)


def _failed_future(exc: BaseException) -> Any:
    from kafka.future import Future

    return Future().failure(exc)


def _retriable(exc: BaseException | None) -> bool:
    return bool(getattr(exc, "retriable", False))


def _describe(errors: Sequence[BaseException | None]) -> str:
    first = next((e for e in errors if e is not None), None)
    if first is None:
        return "unknown error"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{type(first).__name__}: {first}{more}"


def _unregister_atexit(producer: Any) -> None:
    """kafka-python closes producers at exit; logpipe must flush through it first, so it closes it."""
    unregister = getattr(producer, "_unregister_cleanup", None)
    if unregister is not None:
        unregister()


def _abort(producer: Any) -> None:
    """Fail the producer's unsent records now and close it in the background.

    ``close`` alone would first wait for them (it flushes); kafka-python's
    force-close is what its own close falls back to after a timeout.
    """
    sender = getattr(producer, "_sender", None)
    if sender is not None and hasattr(sender, "force_close"):
        sender.force_close()
    threading.Thread(target=_close, args=(producer, 2.0), name="logpipe-kafka-close", daemon=True).start()


def _close(producer: Any, timeout: float) -> None:
    try:
        producer.close(timeout=timeout)
    except Exception:
        sender = getattr(producer, "_sender", None)
        if sender is not None and hasattr(sender, "force_close"):
            sender.force_close()


#: One line on stderr (never through logging, which may feed this exporter), at most one every 10 s
#: across all Kafka exporters unless forced, so a flapping broker cannot flood stderr.
_report = Reporter()
