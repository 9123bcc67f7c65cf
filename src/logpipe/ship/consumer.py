"""The shipper's Kafka consumer: one small interface, two client libraries.

``logpipe ship`` needs a handful of consumer calls (poll, commit, pause,
resume, seek, offsets for the lag display) and spends most of its own CPU
inside the client: kafka-python decodes every record in Python (about
10 us of CPU a message on the benchmark machine), librdkafka, through
confluent-kafka, in C (about 3 us, its threads included). On a machine the
shipper shares with Elasticsearch that CPU is taken from the indexing.

So the shipper talks to `Consumer`, and `open_consumer` picks the library (the confluent-kafka
one lives in `logpipe.ship.confluent`):
confluent-kafka when it is installed (``pip install 'logpipe-kafkalog[ship]'``) and
kafka-python otherwise, or the one ``LOGPIPE_SHIP_KAFKA_CLIENT`` names. The
two behave the same for the shipper: eager rebalances with a callback when
partitions are revoked and assigned, commits that fail with `CommitRefused`
when the group moved on, messages with the same attributes.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..exceptions import ConfigError
from ..kafkaclient import CLIENTS, Connection, KafkaClient, choose_client, kafka_python

if TYPE_CHECKING:
    from .options import ShipOptions

__all__ = [
    "CLIENTS",
    "CommitFailed",
    "CommitRefused",
    "Consumer",
    "ConsumerFactory",
    "ConsumerSettings",
    "KafkaClient",
    "Message",
    "TopicPartition",
    "kafka_consumer",
    "keep_alive",
    "open_consumer",
    "resolve_client",
]


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

    #: How to reach the cluster (`logpipe.kafkaclient`: servers, client id, and security to come).
    connection: Connection
    group_id: str
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
    if choice == "auto":
        fast = _installed("confluent_kafka") and (pattern is None or _librdkafka_accepts(pattern))
        if not fast and _installed("kafka"):
            return "kafka-python"
    choice = choose_client(choice, variable, extras={"kafka-python": "kafka", "confluent-kafka": "ship"})
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


#: Opens the consumer, given the shipper's rebalance callbacks (revoked, assigned) and error callback.
ConsumerFactory = Callable[[Rebalance, Rebalance, Callable[[str], None]], Consumer]


def kafka_consumer(options: ShipOptions, client: str) -> ConsumerFactory:
    """The shipper's default `ConsumerFactory`: *client* (a `resolve_client` answer) configured from *options*."""
    from .options import kafka_connection  # options imports this module (resolve_client)

    settings = ConsumerSettings(
        connection=kafka_connection(options, f"logpipe-shipper-{options.group_id}"),
        group_id=options.group_id,
        topics=options.topics,
        pattern=options.pattern,
        instance_id=options.instance_id,
        session_timeout=options.session_timeout,
        auto_offset_reset=options.auto_offset_reset,
        max_records=options.batch_size,
        fetch_bytes=max(options.fetch_max_bytes, options.max_message_bytes + 64 * 1024),
    )
    return functools.partial(open_consumer, client, settings)


def keep_alive(
    consumer: Consumer, seconds: float, max_records: int, out_of_time: Callable[[], bool], tick: Callable[[], object]
) -> bool:
    """Keep the group membership alive for *seconds* without reading more messages.

    Partitions are paused and ``poll`` is called in short slices (kafka-python's
    heartbeat thread alone does not satisfy ``max.poll.interval.ms``). Returns
    False as soon as *out_of_time* says so (a stop's grace time is over).
    """
    end = time.monotonic() + seconds
    while not out_of_time():
        left = end - time.monotonic()
        if left <= 0:
            return True
        consumer.pause(consumer.assignment())
        polled = consumer.poll(min(left, 0.25), max_records)
        for records in polled.values():  # should not happen while paused: put them back
            first = min(records, key=lambda m: m.offset)
            consumer.seek(TopicPartition(first.topic, first.partition), first.offset)
        tick()
    return False


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
        from .confluent import ConfluentConsumer

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

        config = kafka_python(
            s.connection,
            group_id=s.group_id,
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
        self._consumer = KafkaConsumer(**config)
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
