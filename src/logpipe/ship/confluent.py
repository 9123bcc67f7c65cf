"""`Consumer` over confluent-kafka (librdkafka): about a third of kafka-python's CPU per message.

Kept apart from `logpipe.ship.consumer` because only this module imports
confluent-kafka, and only when ``LOGPIPE_SHIP_KAFKA_CLIENT`` resolves to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

from ..kafkaclient import librdkafka
from .consumer import (
    BOOTSTRAP_TIMEOUT,
    CommitFailed,
    CommitRefused,
    ConsumerSettings,
    Message,
    Rebalance,
    TopicPartition,
    _anchored,
)

__all__ = ["ConfluentConsumer", "Record"]


class Record(NamedTuple):
    """A confluent-kafka message copied into the shape of `Message` (one tuple, read once)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    leader_epoch: int | None


_LIBRDKAFKA_LOG = logging.getLogger("logpipe.ship.kafka")
_LIBRDKAFKA_LOG.addHandler(logging.NullHandler())  # a library's logger: quiet until logging is configured

#: librdkafka error codes meaning "the group moved on": the partitions are no longer ours to commit.
_REFUSED = {22, 25, 27, 82, -142}  # ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS,
#                                     FENCED_INSTANCE_ID, _ASSIGNMENT_LOST


class ConfluentConsumer:
    """`Consumer` over confluent-kafka (librdkafka).

    librdkafka's log lines go to the ``logpipe.ship.kafka`` logger (silent
    unless the application configures logging) instead of straight to
    stderr, where a broker being down would print a line per reconnect
    attempt; the errors themselves reach *on_error* (the shipper's display).
    """

    name = "confluent-kafka"

    def __init__(
        self,
        settings: ConsumerSettings,
        on_revoked: Rebalance,
        on_assigned: Rebalance,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        import confluent_kafka

        s = settings
        conf = librdkafka(
            s.connection,
            **{
                "group.id": s.group_id,
                "session.timeout.ms": int(s.session_timeout * 1000),
                "heartbeat.interval.ms": int(min(3.0, s.session_timeout / 3) * 1000),
                "enable.auto.commit": False,
                "auto.offset.reset": s.auto_offset_reset,
                "fetch.max.bytes": s.fetch_bytes,
                "max.partition.fetch.bytes": s.fetch_bytes,
                # librdkafka prefetches up to this much per partition in the background; the same
                # bound as one fetch, not its 64 MiB default, so memory stays what the settings say.
                "queued.max.messages.kbytes": max(s.fetch_bytes // 1024, 1024),
                "receive.message.max.bytes": s.fetch_bytes + 1024 * 1024,
                "logger": _LIBRDKAFKA_LOG,
            },
        )
        if on_error is not None:
            conf["error_cb"] = lambda error: on_error(f"Kafka: {error.str()}")
        if s.instance_id:
            conf["group.instance.id"] = s.instance_id
        self._lib = confluent_kafka
        self._consumer = confluent_kafka.Consumer(conf)
        self._paused: set[TopicPartition] = set()
        try:
            # librdkafka would retry unreachable brokers for ever; fail at start, as kafka-python does.
            self._consumer.list_topics(timeout=BOOTSTRAP_TIMEOUT)
        except confluent_kafka.KafkaException:
            self._consumer.close()
            raise

        def assigned(consumer: Any, partitions: list[Any]) -> None:
            # Assign explicitly, so a pause asked for by the callback applies to these partitions.
            consumer.assign(partitions)
            on_assigned({TopicPartition(p.topic, p.partition) for p in partitions})

        def revoked(consumer: Any, partitions: list[Any]) -> None:
            gone = {TopicPartition(p.topic, p.partition) for p in partitions}
            self._paused -= gone
            on_revoked(gone)

        topics = [_anchored(s.pattern)] if s.pattern else list(s.topics)
        self._consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked)

    def poll(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Message]]:
        found: dict[TopicPartition, list[Message]] = {}
        # consume(n, timeout) waits until it has n messages or the timeout is over; the shipper wants
        # what is there now, or the first message to come within the timeout (kafka-python's poll).
        messages: list[Any] = cast(Any, self._consumer.consume(max_records, 0))
        if not messages and timeout > 0:
            first = self._consumer.poll(timeout)
            if first is not None:
                messages = (
                    [first, *cast(Any, self._consumer.consume(max_records - 1, 0))] if max_records > 1 else [first]
                )
        # Per message: one tuple made in C (`tuple.__new__`, not the named tuple's Python __new__), and the
        # partition's list found again only when the partition changes (consume() returns runs of one).
        unavailable = self._lib.TIMESTAMP_NOT_AVAILABLE
        make = tuple.__new__
        batch: list[Message] = []
        topic, partition = "", -1
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise self._lib.KafkaException(error)
                continue  # transient (a broker went away, end of partition): librdkafka retries
            kind, ts = m.timestamp()
            record = make(
                Record,
                (
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    None if kind == unavailable else ts,
                    m.key(),
                    m.value(),
                    m.headers() or [],
                    m.leader_epoch(),
                ),
            )
            if record[1] != partition or record[0] != topic:
                topic, partition = record[0], record[1]
                tp = TopicPartition(topic, partition)
                batch = found.setdefault(tp, [])
            batch.append(record)
        return found

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, int | None]], timeout: float) -> None:
        lib = self._lib
        request = [
            lib.TopicPartition(tp.topic, tp.partition, offset, leader_epoch=epoch)
            if epoch is not None
            else lib.TopicPartition(tp.topic, tp.partition, offset)
            for tp, (offset, epoch) in offsets.items()
        ]
        try:
            answer = self._consumer.commit(offsets=request, asynchronous=False)
        except lib.KafkaException as exc:
            error: Any = exc.args[0] if exc.args else None
            code = error.code() if hasattr(error, "code") else None
            raise (CommitRefused if code in _REFUSED else CommitFailed)(str(exc)) from exc
        for part in cast(list[Any], answer or []):
            if part.error is not None:
                raise (CommitRefused if part.error.code() in _REFUSED else CommitFailed)(str(part.error))

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(p.topic, p.partition) for p in self._consumer.assignment()}

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        wanted = set(partitions)
        if wanted:
            self._consumer.pause(self._native(wanted))
            self._paused |= wanted

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        wanted = set(partitions)
        if wanted:
            self._consumer.resume(self._native(wanted))
            self._paused -= wanted

    def paused(self) -> set[TopicPartition]:
        return self._paused & self.assignment()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(self._lib.TopicPartition(partition.topic, partition.partition, offset))

    def end_offsets(self, partitions: Sequence[TopicPartition], timeout: float) -> dict[TopicPartition, int]:
        # The ends the last fetch responses carried: asking the broker would queue behind the
        # long-polling fetch on the same connection (up to fetch.wait.max.ms) on every display tick.
        ends = {}
        for tp in partitions:
            _low, high = self._consumer.get_watermark_offsets(
                self._lib.TopicPartition(tp.topic, tp.partition), timeout=timeout, cached=True
            )
            if high >= 0:
                ends[tp] = int(high)
        return ends

    def committed(self, partition: TopicPartition, timeout: float) -> int | None:
        (answer,) = self._consumer.committed(self._native([partition]), timeout=timeout)
        return int(answer.offset) if answer.offset >= 0 else None

    def close(self) -> None:
        self._consumer.close()

    def _native(self, partitions: Iterable[TopicPartition]) -> list[Any]:
        return [self._lib.TopicPartition(tp.topic, tp.partition) for tp in partitions]
