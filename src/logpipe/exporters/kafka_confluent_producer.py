"""`Producer` over confluent-kafka: librdkafka does the batching, sending and retrying in C threads.

Those threads never hold the GIL, so this producer runs in the application's
process (``LOGPIPE_ISOLATION=auto``). Delivery reports are served by
``poll``, from the thread that waits for a batch: one closure per batch
collects them, and only a failure's report is matched back to its record
(by its value: librdkafka does not return the headers, and every value
holds the record's unique ``Id``).

librdkafka's own log lines go to the ``logpipe.kafka.librdkafka`` logger,
which has a NullHandler and does not propagate (logging may be what feeds
this exporter, and a broker that is down would print a line per reconnect);
its errors reach the exporter's stderr report, except those that only say
the broker is unreachable, which the down-breaker announces once per outage.

Fork: librdkafka's threads do not survive ``os.fork``, so a child must
never poll, flush or destroy its parent's producer (destroying one joins
threads that do not exist there, and hangs). `forget` keeps it alive for
ever; the exporter makes a new one in the child.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from ..record import Record
from .kafka_options import headers, no_key
from .kafka_outage import Failure

__all__ = ["ConfluentProducer", "classify"]

_LOG = logging.getLogger("logpipe.kafka.librdkafka")
_LOG.addHandler(logging.NullHandler())
_LOG.propagate = False

#: Errors about one record: retrying it will not help, and the broker is fine.
_RECORD_CODES = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,  # the broker's CORRUPT_MESSAGE
    KafkaError.INVALID_MSG_SIZE,
}

#: Local errors that mean "the broker did not answer in time or is gone" (librdkafka does not flag
#: them retriable: they are final for the record, but say nothing against sending it again later).
_TRANSIENT_CODES = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError.REQUEST_TIMED_OUT,
}

#: Error callbacks the down-breaker already covers (one line per outage, not one per reconnect).
_OUTAGE_CODES = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}

#: ``produce``'s partition for "let the partitioner choose" (librdkafka's RD_KAFKA_PARTITION_UA).
_ANY_PARTITION = -1

#: Producers abandoned in a forked child (see the module's docstring).
_orphans: list[Any] = []


def classify(error: Any) -> Failure:
    """librdkafka's ``KafkaError`` as a `Failure`."""
    code = error.code()
    text = f"{error.name()}: {error.str()}"
    if error.fatal():
        return Failure("fatal", text)
    if code in _RECORD_CODES:
        return Failure("record", text)
    return Failure("retriable" if code in _TRANSIENT_CODES or error.retriable() else "other", text)


class ConfluentProducer:
    """confluent-kafka's ``Producer`` behind the `Producer` interface.

    *block*: seconds a full local queue may hold up the hand-over of a batch
    before the rest of the batch counts as unsent.
    """

    def __init__(
        self,
        config: dict[str, Any],
        key: Callable[[Record], bytes | None],
        on_error: Callable[[Any], None],
        *,
        block: float,
    ) -> None:
        def error_cb(error: Any) -> None:
            if error.fatal() or error.code() not in _OUTAGE_CODES:
                on_error(error)

        self._producer = confluent_kafka.Producer({**config, "logger": _LOG, "error_cb": error_cb})
        self._key = key
        self._block = block
        self._closing = threading.Lock()

    def send(self, topic: str, batch: Sequence[Record]) -> _Flight:
        flight = _Flight(self._producer, batch)
        produce: Any = self._producer.produce  # its stub types headers as str-or-bytes values: ours are bytes
        key = None if self._key is no_key else self._key
        report = flight.delivered
        i, n = 0, len(batch)
        give_up_at: float | None = None
        while i < n:
            record = batch[i]
            # The arguments by position (topic, value, key, partition, callback, on_delivery, timestamp,
            # headers: confluent-kafka's order), as keywords cost a dict per message.
            try:
                produce(
                    topic,
                    record.payload,
                    None if key is None else key(record),
                    _ANY_PARTITION,
                    report,
                    None,
                    0,
                    headers(record),
                )
            except BufferError as exc:  # the local queue is full: serve delivery reports to make room
                now = time.monotonic()
                give_up_at = give_up_at or now + self._block
                if now >= give_up_at:
                    flight.stop(i, Failure("retriable", f"BufferError: {exc}"))
                    break
                self._poll(0.01)
                continue
            except KafkaException as exc:
                failure = classify(exc.args[0])
                if failure.kind != "record":  # closed, fatal state: nothing more goes through this producer
                    flight.stop(i, failure)
                    break
                flight.reject(i, failure)  # this record can never go; the others still can
            i += 1
        flight.expected = i - len(flight.rejected)
        return flight

    def _poll(self, timeout: float) -> None:
        with contextlib.suppress(RuntimeError):  # closed by abort() meanwhile: its reports were served before
            self._producer.poll(timeout)

    def abort(self) -> None:
        """Fail everything outstanding now; serve the reports and close in the background."""
        _purge(self._producer)
        threading.Thread(target=self.close, args=(2.0,), name="logpipe-kafka-close", daemon=True).start()

    def close(self, timeout: float) -> None:
        with self._closing:
            producer = self._producer
            try:
                if producer.flush(timeout) > 0:
                    _purge(producer)
                    producer.flush(1.0)
                close = getattr(producer, "close", None)  # confluent-kafka >= 2.6; before, the finalizer
                if close is not None:
                    close()
            except RuntimeError:  # already closed
                pass

    def forget(self) -> None:
        _orphans.append(self._producer)
        # A reference that is never released: not even interpreter shutdown may finalize it here.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._producer))


def _purge(producer: Any) -> None:
    with contextlib.suppress(RuntimeError, KafkaException):  # closed meanwhile
        producer.purge(in_queue=True, in_flight=True)


class _Flight:
    """A batch's delivery reports: ``None`` for each acknowledged record, ``(error, value)`` for each failure."""

    def __init__(self, producer: Any, batch: Sequence[Record]) -> None:
        self.producer = producer
        self.batch = batch
        self.reports: list[tuple[Any, bytes] | None] = []
        #: Records librdkafka refused at once (too large), by index, and why.
        self.rejected: list[tuple[int, Failure]] = []
        #: Index of the first record not handed over, and why (the rest of the batch fails with it).
        self.unsent: tuple[int, Failure] | None = None
        #: Delivery reports to wait for (set once the batch is handed over).
        self.expected = 0
        append = self.reports.append

        def delivered(error: Any, message: Any) -> None:
            # Runs inside poll(), once per message, on whichever thread polls: list.append is atomic under the
            # GIL. A closure over the bound append: no attribute look-up per report.
            append(None if error is None else (error, message.value()))

        self.delivered = delivered

    def reject(self, index: int, failure: Failure) -> None:
        self.rejected.append((index, failure))

    def stop(self, index: int, failure: Failure) -> None:
        self.unsent = (index, failure)

    def done(self) -> bool:
        return len(self.reports) >= self.expected

    def await_progress(self, timeout: float) -> None:
        try:
            self.producer.poll(timeout)
        except RuntimeError:  # the producer was closed after an outage: its reports were all served
            time.sleep(min(timeout, 0.01))

    def outcome(self, give_up: bool) -> tuple[list[Record], list[Failure]]:
        if give_up and not self.done():  # the broker is gone: fail what is outstanding, then collect every report
            _purge(self.producer)
            end = time.monotonic() + 2.0
            while not self.done() and time.monotonic() < end:
                self.await_progress(0.05)
        batch = self.batch
        end_of_handover = self.unsent[0] if self.unsent is not None else len(batch)
        failed = {i for i, _ in self.rejected}
        failed.update(range(end_of_handover, len(batch)))
        errors = [f for _, f in self.rejected]
        if self.unsent is not None:
            errors.append(self.unsent[1])
        reports = self.reports
        bad = [r for r in reports if r is not None] if reports.count(None) < len(reports) else []
        if bad:
            by_value: dict[bytes, list[int]] = {}
            for i in range(end_of_handover):
                if i not in failed:
                    by_value.setdefault(batch[i].payload, []).append(i)
            for error, value in bad:
                errors.append(classify(error))
                indexes = by_value.get(value)
                if indexes:
                    failed.add(indexes.pop())
        if not self.done():  # reports missing even after a purge: no telling which arrived, send all again
            failed.update(range(end_of_handover))
            errors.append(Failure("retriable", "no delivery report in time"))
        return [batch[i] for i in sorted(failed)], errors
