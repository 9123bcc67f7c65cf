"""The shipper's Kafka consumer: one small interface, two client libraries.

``logpipe ship`` needs a handful of consumer calls (poll, commit, pause,
resume, seek, offsets for the lag display) and spends most of its own CPU
inside the client: kafka-python decodes every record in Python (about
10 us of CPU a message on the benchmark machine), librdkafka, through
confluent-kafka, in C (about 3 us, its threads included). On a machine the
shipper shares with Elasticsearch that CPU is taken from the indexing.

So the shipper talks to `Consumer`, and `open_consumer` picks the library:
confluent-kafka when it is installed (``pip install 'logpipe-kafkalog[ship]'``) and
kafka-python otherwise, or the one ``LOGPIPE_SHIP_KAFKA_CLIENT`` names. The
two behave the same for the shipper: eager rebalances with a callback when
partitions are revoked and assigned, commits that fail with `CommitRefused`
when the group moved on, messages with the same attributes.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, cast

from .exceptions import ConfigError
from .plugins import DISTRIBUTION

__all__ = [
    "CLIENTS",
    "CommitFailed",
    "CommitRefused",
    "Consumer",
    "ConsumerSettings",
    "Message",
    "TopicPartition",
    "open_consumer",
    "resolve_client",
]

KafkaClient = Literal["auto", "kafka-python", "confluent-kafka"]

#: The accepted values of ``kafka_client``, and the module each one needs.
CLIENTS: dict[str, str] = {"kafka-python": "kafka", "confluent-kafka": "confluent_kafka"}


class TopicPartition(NamedTuple):
    """A partition; equal to (and hashed like) kafka-python's own ``TopicPartition``."""

    topic: str
    partition: int


class Message(Protocol):
    """What the shipper reads of a consumed message (kafka-python's ``ConsumerRecord`` has it all)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...
    @property
    def leader_epoch(self) -> int | None: ...


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


class CommitRefused(Exception):
    """The group rebalanced: these partitions are someone else's now, and so are their offsets."""


class CommitFailed(Exception):
    """The commit did not happen (broker unreachable, timeout); a later commit covers it."""


#: Seconds the confluent-kafka consumer waits for a first broker answer before giving up.
BOOTSTRAP_TIMEOUT = 10.0

#: Called with the partitions revoked, then with those assigned, from inside `Consumer.poll`.
Rebalance = Callable[[set[TopicPartition]], None]


@dataclass(frozen=True)
class ConsumerSettings:
    """What the shipper asks of its consumer, in the client libraries' common terms."""

    bootstrap_servers: tuple[str, ...]
    group_id: str
    client_id: str
    topics: tuple[str, ...] = ()
    pattern: str | None = None
    instance_id: str | None = None
    session_timeout: float = 45.0
    auto_offset_reset: str = "earliest"
    max_records: int = 2000
    fetch_bytes: int = 16 * 1024 * 1024


class Consumer(Protocol):
    """The consumer calls the shipper makes, all from one thread."""

    name: str

    def poll(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Message]]:
        """Messages by partition, in offset order; waits up to *timeout* seconds for the first."""

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, int | None]], timeout: float) -> None:
        """Commit ``{partition: (next offset, leader epoch)}``; raises `CommitRefused` or `CommitFailed`."""

    def assignment(self) -> set[TopicPartition]: ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def paused(self) -> set[TopicPartition]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def end_offsets(self, partitions: Sequence[TopicPartition], timeout: float) -> dict[TopicPartition, int]:
        """Log end offsets; partitions whose end is not known yet are left out."""

    def committed(self, partition: TopicPartition, timeout: float) -> int | None: ...

    def close(self) -> None:
        """Leave the group without committing."""


def resolve_client(
    choice: str,
    variable: str = "LOGPIPE_SHIP_KAFKA_CLIENT",
    *,
    pattern: str | None = None,
    pattern_variable: str = "LOGPIPE_SHIP_PATTERN",
) -> str:
    """The client library for *choice*; `ConfigError` when it is not installed or cannot take *pattern*.

    ``auto`` prefers confluent-kafka, unless *pattern* (a Python regular
    expression) uses syntax librdkafka's regex engine lacks, such as
    lookahead: then the pattern wins and kafka-python consumes.
    """
    if choice not in ("auto", *CLIENTS):
        raise ConfigError(f"{variable}={choice!r}: expected auto, {', '.join(CLIENTS)}")
    if choice == "auto":
        fast = _installed("confluent_kafka") and (pattern is None or _librdkafka_accepts(pattern))
        return "confluent-kafka" if fast or not _installed("kafka") else "kafka-python"
    if not _installed(CLIENTS[choice]):
        extra = f"{DISTRIBUTION}[ship]" if choice == "confluent-kafka" else f"{DISTRIBUTION}[kafka]"
        raise ConfigError(f"{variable}={choice}: {choice} is not installed (pip install '{extra}')")
    if choice == "confluent-kafka" and pattern is not None and not _librdkafka_accepts(pattern):
        raise ConfigError(
            f"{pattern_variable}={pattern!r}: librdkafka (confluent-kafka) cannot use this regular expression "
            f"(it has no lookahead or lookbehind); rewrite it or set {variable}=kafka-python"
        )
    return choice


def _librdkafka_accepts(pattern: str) -> bool:
    """Whether librdkafka compiles *pattern* (it subscribes without contacting a broker)."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer(
        {"group.id": "logpipe-pattern-check", "bootstrap.servers": "127.0.0.1:9", "log_level": 0}
    )
    try:
        consumer.subscribe([_anchored(pattern)])
        return True
    except confluent_kafka.KafkaException:
        return False
    finally:
        consumer.close()


def _anchored(pattern: str) -> str:
    """librdkafka treats a subscription as a regex only when it starts with ``^``."""
    return "^" + pattern.removeprefix("^")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def open_consumer(
    client: str,
    settings: ConsumerSettings,
    on_revoked: Rebalance,
    on_assigned: Rebalance,
    on_error: Callable[[str], None] | None = None,
) -> Consumer:
    """Subscribe with *client* (a `resolve_client` answer) and return the consumer.

    *on_error* hears about client-level errors the library recovers from on
    its own (brokers down, timeouts), where the library reports them.
    """
    if client == "confluent-kafka":
        return ConfluentConsumer(settings, on_revoked, on_assigned, on_error)
    return KafkaPythonConsumer(settings, on_revoked, on_assigned)


# -- kafka-python ---------------------------------------------------------------------------------


class KafkaPythonConsumer:
    """`Consumer` over kafka-python's ``KafkaConsumer``; its records are passed on as they are."""

    name = "kafka-python"

    def __init__(self, settings: ConsumerSettings, on_revoked: Rebalance, on_assigned: Rebalance) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        s = settings

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                on_revoked({TopicPartition(*tp) for tp in revoked})

            def on_partitions_assigned(self, assigned: Any) -> None:
                on_assigned({TopicPartition(*tp) for tp in assigned})

        self._consumer = KafkaConsumer(
            bootstrap_servers=list(s.bootstrap_servers),
            group_id=s.group_id,
            client_id=s.client_id,
            group_instance_id=s.instance_id,
            session_timeout_ms=int(s.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, s.session_timeout / 3) * 1000),
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.max_records,
            # What one fetch response may bring, from one partition or all of them. kafka-python
            # asks a partition again only once its buffered messages are taken, so small fetches
            # (1 MiB, about 3,000 messages) leave the shipper waiting on the broker.
            fetch_max_bytes=s.fetch_bytes,
            max_partition_fetch_bytes=s.fetch_bytes,
        )
        if s.pattern:
            self._consumer.subscribe(pattern=s.pattern, listener=Listener())
        else:
            self._consumer.subscribe(topics=list(s.topics), listener=Listener())

    def poll(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Message]]:
        return self._consumer.poll(timeout_ms=max(int(timeout * 1000), 1), max_records=max_records)  # type: ignore[no-any-return]

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, int | None]], timeout: float) -> None:
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata
        from kafka.structs import TopicPartition as KafkaTopicPartition

        request = {
            KafkaTopicPartition(*tp): OffsetAndMetadata(offset, "", -1 if epoch is None else epoch)
            for tp, (offset, epoch) in offsets.items()
        }
        try:
            self._consumer.commit(request, timeout_ms=int(timeout * 1000))
        except CommitFailedError as exc:
            raise CommitRefused(str(exc)) from exc
        except KafkaError as exc:
            raise CommitFailed(str(exc)) from exc

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(*tp) for tp in self._consumer.assignment()}

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.pause(*self._native(partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.resume(*self._native(partitions))

    def paused(self) -> set[TopicPartition]:
        return {TopicPartition(*tp) for tp in self._consumer.paused()}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        (native,) = self._native([partition])
        self._consumer.seek(native, offset)

    def end_offsets(self, partitions: Sequence[TopicPartition], timeout: float) -> dict[TopicPartition, int]:
        ends = self._consumer.end_offsets(self._native(partitions), timeout_ms=int(timeout * 1000))
        return {TopicPartition(*tp): int(end) for tp, end in ends.items() if end is not None}

    def committed(self, partition: TopicPartition, timeout: float) -> int | None:
        (native,) = self._native([partition])
        offset = self._consumer.committed(native, timeout_ms=int(timeout * 1000))
        return None if offset is None else int(offset)

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    @staticmethod
    def _native(partitions: Iterable[TopicPartition]) -> list[Any]:
        from kafka.structs import TopicPartition as KafkaTopicPartition

        return [KafkaTopicPartition(*tp) for tp in partitions]


# -- confluent-kafka ------------------------------------------------------------------------------

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
        conf: dict[str, Any] = {
            "bootstrap.servers": ",".join(s.bootstrap_servers),
            "group.id": s.group_id,
            "client.id": s.client_id,
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
        }
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
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise self._lib.KafkaException(error)
                continue  # transient (a broker went away, end of partition): librdkafka retries
            kind, ts = m.timestamp()
            record = Record(
                m.topic(),
                m.partition(),
                m.offset(),
                None if kind == self._lib.TIMESTAMP_NOT_AVAILABLE else ts,
                m.key(),
                m.value(),
                m.headers() or [],
                m.leader_epoch(),
            )
            tp = TopicPartition(record.topic, record.partition)
            batch = found.get(tp)
            if batch is None:
                found[tp] = [record]
            else:
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
