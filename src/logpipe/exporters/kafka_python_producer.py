"""`Producer` over kafka-python: each record a future, waited for on its producer batch's latch.

Every private attribute of kafka-python this uses is in `logpipe._kafka_compat`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import kafka.errors
from kafka import KafkaProducer

from .. import _kafka_compat as compat
from ..record import Record
from .kafka_options import headers
from .kafka_outage import Failure

__all__ = ["KafkaPythonProducer", "classify"]

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


def classify(exc: BaseException) -> Failure:
    """kafka-python's exception as a `Failure`."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _FATAL):
        return Failure("fatal", text)
    if isinstance(exc, _RECORD_ERRORS):
        return Failure("record", text)
    return Failure("retriable" if getattr(exc, "retriable", False) else "other", text)


class KafkaPythonProducer:
    """kafka-python's ``KafkaProducer`` behind the `Producer` interface."""

    def __init__(self, config: dict[str, Any], key: Callable[[Record], bytes | None]) -> None:
        self._producer = KafkaProducer(**config)
        compat.unregister_atexit(self._producer)  # the exporter's shutdown closes it, after logpipe's final flush
        self._key = key

    def send(self, topic: str, batch: Sequence[Record]) -> _Flight:
        """Hand the batch to the producer; stop at the first record it will not take."""
        send, key = self._producer.send, self._key
        futures: list[Any] = []
        for record in batch:
            try:
                future = send(topic, value=record.payload, key=key(record), headers=headers(record))
            except kafka.errors.MessageSizeTooLargeError as exc:
                future = _failed_future(exc)  # this record can never go; the others still can
            except Exception as exc:  # metadata timeout, producer closed
                return _Flight(batch, futures, exc)
            futures.append(future)
        return _Flight(batch, futures, None)

    def abort(self) -> None:
        """Fail the unsent records now and close in the background (``close`` alone would wait for them)."""
        compat.force_close(self._producer)
        threading.Thread(target=self.close, args=(2.0,), name="logpipe-kafka-close", daemon=True).start()

    def close(self, timeout: float) -> None:
        try:
            self._producer.close(timeout=timeout)
        except Exception:
            compat.force_close(self._producer)

    def forget(self) -> None:
        compat.unregister_atexit(self._producer)
        _orphans.append(self._producer)


class _Flight:
    """A batch's futures. Records resolve a producer batch at a time, so this waits on the latch of a
    pending record's batch (kafka-python's ``FutureProduceResult``) rather than putting a callback on
    every record: the sender thread, which may share the GIL with the application, does no
    per-record work for us."""

    def __init__(self, batch: Sequence[Record], futures: list[Any], unsent: BaseException | None) -> None:
        self.batch = batch
        self.futures = futures
        self.unsent = unsent
        #: Futures after this index are resolved; the last ones are usually the last to resolve.
        self._next = len(futures) - 1

    def done(self) -> bool:
        while self._next >= 0 and self.futures[self._next].is_done:
            self._next -= 1
        return self._next < 0

    def await_progress(self, timeout: float) -> None:
        if self._next >= 0:
            compat.await_record(self.futures[self._next], timeout)

    def outcome(self, give_up: bool) -> tuple[list[Record], list[Failure]]:
        batch, futures = self.batch, self.futures
        failed = [r for r, f in zip(batch, futures, strict=False) if f.exception is not None or not f.is_done]
        failed += batch[len(futures) :]
        errors = [classify(f.exception) for f in futures if f.failed()]
        if self.unsent is not None:
            errors.append(classify(self.unsent))
        return failed, errors


def _failed_future(exc: BaseException) -> Any:
    from kafka.future import Future

    return Future().failure(exc)
