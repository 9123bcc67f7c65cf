"""``logpipe ship``: consume KafkaLog records from Kafka and bulk-index them into Elasticsearch.

The delivery guarantee is at least once, without duplicate documents:

* offsets are committed only after every message of a batch, and of every
  batch polled before it, is accounted for: created in Elasticsearch,
  already there (409), or written to the dead-letter destination (batches
  are pipelined, see `CommitOrder`). A crash at any point redelivers the uncommitted
  messages, and because each document's ``_id`` is the record's ``Id`` the
  redelivered ones are no-ops (409), never second copies;
* while Elasticsearch is unreachable the batch is retried with backoff,
  nothing is committed, and the consumer keeps calling ``poll`` with its
  partitions paused, so the group does not evict it (``max.poll.interval.ms``)
  and no more messages pile up in memory;
* messages that can never be indexed (not JSON, not an object, missing
  ``Id``/``Msg``/``Time``, too large, or refused by Elasticsearch with a 4xx)
  go to the dead-letter destination with the reason and their topic,
  partition and offset, and shipping goes on.

Several shippers with the same ``group_id`` share the partitions through
Kafka's group protocol; each commits only partitions it still owns.

`Shipper` is the Python API (run it in a thread, call `Shipper.stop`);
`logpipe.cli.ship` wraps it in a command with signals and a progress display.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from . import config, ingress
from . import elasticsearch as es
from .config import at_least, setting
from .consumer import (
    CommitFailed,
    CommitRefused,
    Consumer,
    ConsumerSettings,
    KafkaClient,
    Message,
    TopicPartition,
    open_consumer,
    resolve_client,
)
from .exceptions import ConfigError

if TYPE_CHECKING:
    from kafka import KafkaProducer

__all__ = ["ENV_PREFIX", "DeadLetter", "ShipOptions", "ShipStats", "Shipper", "load_options"]

ENV_PREFIX = "LOGPIPE_SHIP_"

#: Header names of a dead letter written to Kafka (the original headers come first).
DLQ_HEADER = "logpipe.dlq."

_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _optional_prefix(value: str | None) -> str | None:
    return None if value is None else es._check_prefix(value)


def _optional_hosts(value: tuple[str, ...]) -> str | None:
    return es._check_hosts(value) if value else None


@dataclass(frozen=True)
class ShipOptions:
    """Settings of ``logpipe ship`` (``LOGPIPE_SHIP_*``).

    How to reach Elasticsearch otherwise (auth, TLS, template, analyzer,
    retries) comes from ``LOGPIPE_ELASTICSEARCH_*``, shared with the direct exporter.
    """

    bootstrap_servers: tuple[str, ...] = setting(("127.0.0.1:9092",), "Kafka bootstrap servers, comma list.")
    topics: tuple[str, ...] = setting((), "Topics to consume, comma list (or use PATTERN).")
    pattern: str | None = setting(None, "Regular expression of topics to consume, instead of TOPICS.")
    group_id: str = setting("logpipe-shipper", "Consumer group; shippers in one group share partitions.")
    instance_id: str | None = setting(
        None,
        "Static group membership id (unique per shipper): a restarted shipper gets its partitions "
        "back without a rebalance.",
    )
    session_timeout: float = setting(
        45.0,
        "Seconds without a heartbeat before a dead shipper's partitions move to the others.",
        check=at_least(1),
    )
    auto_offset_reset: Literal["earliest", "latest"] = setting(
        "earliest", "Where a group without committed offsets starts: earliest or latest."
    )
    es_hosts: tuple[str, ...] = setting(
        (), "Elasticsearch URLs, comma list (default: LOGPIPE_ELASTICSEARCH_HOSTS).", check=_optional_hosts
    )
    index_prefix: str | None = setting(
        None, "Index prefix (default: LOGPIPE_ELASTICSEARCH_INDEX_PREFIX).", check=_optional_prefix
    )
    batch_size: int = setting(2000, "Most messages shipped (and committed) together.", check=at_least(1))
    concurrency: int = setting(
        4,
        "Bulk requests in flight at once, across batch boundaries (like parallel_bulk's 4 threads).",
        check=at_least(1),
    )
    batch_max_wait: float = setting(
        1.0,
        "Seconds the first message of a batch waits for the batch to fill while other batches are being "
        "indexed (with none in flight a partial batch goes as soon as a poll finds nothing more).",
        check=at_least(0),
    )
    max_message_bytes: int = setting(
        1024 * 1024, "Larger messages go to the dead-letter destination.", check=at_least(1)
    )
    fetch_max_bytes: int = setting(
        16 * 1024 * 1024,
        "Most bytes one Kafka fetch brings (at least MAX_MESSAGE_BYTES); larger fetches keep "
        "Elasticsearch busy with fewer round trips, at the cost of memory.",
        check=at_least(64 * 1024),
    )
    dead_letter: str = setting(
        "{topic}.dlq", "Dead-letter Kafka topic ({topic} = the source topic) or file:PATH for JSON Lines."
    )
    shutdown_timeout: float = setting(
        30.0,
        "Seconds a stop request waits for the batches in flight (e.g. while Elasticsearch is down).",
        check=at_least(0),
    )
    status_interval: float = setting(2.0, "Seconds between progress updates.", check=at_least(0.1))
    status_file: Path | None = setting(
        None,
        "JSON file rewritten every STATUS_INTERVAL with the state and counters, for health checks "
        "(logpipe health reads it; the container image sets it).",
    )
    kafka_client: KafkaClient = setting(
        "auto",
        "Kafka client library that consumes: confluent-kafka (librdkafka, about a third of kafka-python's "
        "CPU per message; pip install 'logpipe-kafkalog[ship]') or kafka-python; auto takes confluent-kafka when "
        "it is installed.",
    )


def load_options(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[ShipOptions, es.ElasticsearchOptions]:
    """Read ``LOGPIPE_SHIP_*`` and ``LOGPIPE_ELASTICSEARCH_*`` (arguments win); validate both."""
    ship = config.load(ShipOptions, ENV_PREFIX, overrides, environ)
    if bool(ship.topics) == bool(ship.pattern):
        raise ConfigError(f"set exactly one of {ENV_PREFIX}TOPICS (--topic) and {ENV_PREFIX}PATTERN (--pattern)")
    if ship.pattern:
        try:
            re.compile(ship.pattern)
        except re.error as exc:
            raise ConfigError(f"{ENV_PREFIX}PATTERN={ship.pattern!r}: not a regular expression ({exc})") from None
    _check_dead_letter(ship.dead_letter)
    resolve_client(ship.kafka_client, f"{ENV_PREFIX}KAFKA_CLIENT", pattern=ship.pattern)
    es_overrides: dict[str, Any] = {}
    if ship.es_hosts:
        es_overrides["hosts"] = ship.es_hosts
    if ship.index_prefix:
        es_overrides["index_prefix"] = ship.index_prefix
    es_options = config.load(es.ElasticsearchOptions, es.ENV_PREFIX, es_overrides, environ)
    es.check_options(es_options)
    return ship, es_options


def _check_dead_letter(value: str) -> None:
    var = f"{ENV_PREFIX}DEAD_LETTER"
    if value.startswith("file:"):
        if not value[5:]:
            raise ConfigError(f"{var}={value!r}: file: needs a path, e.g. file:logs/ship-dead-letter.jsonl")
        return
    try:
        sample = value.format(topic="logs")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{var}={value!r}: only {{topic}} may be substituted ({exc})") from None
    if not _TOPIC_CHARS.match(sample):
        raise ConfigError(f"{var}={value!r}: not a Kafka topic name (letters, digits, . _ -) nor file:PATH")


# -- what the shipper reports -------------------------------------------------------


@dataclass
class ShipStats:
    """Counters of one `Shipper`, updated by its thread; read them from its progress callback."""

    consumed: int = 0
    #: Documents Elasticsearch created.
    indexed: int = 0
    #: Messages that were already indexed (redelivered after a crash or rebalance).
    duplicates: int = 0
    dead_lettered: int = 0
    #: Of the dead letters, those Elasticsearch refused (4xx) rather than malformed ones.
    rejected: int = 0
    #: Bulk rounds that had to be repeated (Elasticsearch down, 429, 5xx).
    retries: int = 0
    commits: int = 0
    commit_errors: int = 0
    #: Messages consumed but not yet accounted for (left uncommitted by a stop).
    in_flight: int = 0
    #: Problems seen (retries, dead letters, failed commits); the last one in words.
    errors: int = 0
    last_error: str | None = None
    state: str = "starting"
    started: float = field(default_factory=time.monotonic)
    #: When the first message was consumed and the last one accounted for (monotonic).
    first_at: float | None = None
    last_at: float | None = None
    #: ``topic[partition]`` -> log end offset minus committed offset.
    lag: dict[str, int] = field(default_factory=dict)
    assigned: int = 0
    #: Called with the seconds of each finished bulk request (`logpipe.metrics`' histogram); None: nobody listens.
    on_bulk: Callable[[float], None] | None = None


@dataclass(frozen=True)
class DeadLetter:
    """One message that cannot be indexed, and why."""

    message: Message
    reason: str
    status: int | None = None
    index: str | None = None


# -- batches in flight ----------------------------------------------------------------------

#: Batches in flight at once: the one whose bulk requests run, and the next one,
#: polled and checked meanwhile so that Elasticsearch never waits for Kafka.
BATCHES_IN_FLIGHT = 2


@dataclass(eq=False)
class Batch:
    """Messages polled together and committed together, and what is still to do for them."""

    #: Messages polled (good or malformed); ``in_flight`` until the batch is accounted for.
    size: int
    #: Per partition, the last message polled: the commit goes one past it.
    ends: dict[Any, Message]
    #: The messages to index and, position by position, their bulk lines and indices.
    sources: list[Message] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    indices: list[str] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: Bulk requests in flight: the reply to come and the positions it carries.
    requests: list[tuple[Future[es.BulkReply], list[int]]] = field(default_factory=list)
    #: Positions to send again (no answer, 429, 5xx), and why, for humans.
    retry: list[int] = field(default_factory=list)
    retry_reason: str = ""
    #: Every message created, already there, or durably dead-lettered.
    accounted: bool = False


class CommitOrder:
    """Batches in the order they were polled; only an accounted-for front is ever committed.

    Bulk requests of a later batch can finish before an earlier batch's;
    committing the later batch's offsets then would, after a crash, skip the
    earlier batch's messages that are not indexed yet. So offsets are
    released only for batches that are accounted for along with every batch
    polled before them.
    """

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()

    def add(self, batch: Batch) -> None:
        self._batches.append(batch)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(list(self._batches))

    def release(self) -> tuple[list[Batch], dict[Any, Message]]:
        """Remove the accounted-for front; return it and, per partition, its last message."""
        done: list[Batch] = []
        ends: dict[Any, Message] = {}
        while self._batches and self._batches[0].accounted:
            batch = self._batches.popleft()
            done.append(batch)
            for tp, message in batch.ends.items():
                if tp not in ends or message.offset > ends[tp].offset:
                    ends[tp] = message
        return done, ends


# -- the shipper --------------------------------------------------------------------------


class Shipper:
    """Consumes KafkaLog messages and indexes them; `run` blocks until `stop`.

    *progress* is called from the shipper's thread every ``status_interval``
    seconds (and once at the end) with the current `ShipStats`; with
    *track_lag* the stats carry per-partition consumer lag (one ``ListOffsets``
    request per interval).
    """

    def __init__(
        self,
        options: ShipOptions,
        es_options: es.ElasticsearchOptions,
        *,
        progress: Callable[[ShipStats], None] | None = None,
        track_lag: bool = False,
    ) -> None:
        self.options = options
        self.es_options = es_options
        self.stats = ShipStats()
        self._progress = progress
        self._track_lag = track_lag
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._consumer: Consumer | None = None
        #: The Kafka client library in use (`resolve_client`'s answer), for humans.
        self.kafka_client = resolve_client(options.kafka_client, f"{ENV_PREFIX}KAFKA_CLIENT", pattern=options.pattern)
        self._producer: KafkaProducer | None = None
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._order = CommitOrder()
        #: Seconds before the next retry of a bulk request; doubles while they keep failing.
        self._delay = es_options.backoff
        self._paused = False
        #: Next offset per partition that this shipper committed (filters re-reads).
        self._committed: dict[TopicPartition, int] = {}
        self._next_tick = 0.0

    # -- control --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to finish the batches in flight, commit and return (thread- and signal-safe)."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.options.shutdown_timeout
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def rate(self) -> float:
        """Messages accounted for per second, from the first consumed to the last shipped."""
        s = self.stats
        if s.first_at is None or s.last_at is None or s.last_at <= s.first_at:
            return 0.0
        return (s.indexed + s.duplicates + s.dead_lettered) / (s.last_at - s.first_at)

    def run(self) -> ShipStats:
        """Ship until `stop` is called; returns the final counters.

        One thread (this one) makes every consumer call (poll, commit, pause,
        resume: kafka-python's consumer is not thread-safe) and all the
        bookkeeping; bulk requests run on ``concurrency`` worker threads. While
        they run, the next batch is polled and checked, so Elasticsearch is
        not left idle during fetches, checks and commits.

        Raises `ConfigError` when Elasticsearch refuses the index template
        (e.g. an analyzer that is not installed).
        """
        try:
            self._client = es.make_client(self.es_options)
            if self.es_options.install_template and not self._install_template():
                return self.stats
            self._consumer = self._make_consumer()
            self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="logpipe-bulk")
            self.stats.state = "running"
            while not self._stop.is_set():
                if len(self._order) < BATCHES_IN_FLIGHT:
                    messages, ends = self._collect()
                    if messages:
                        self._submit(messages, ends)
                else:
                    self._await_reply()
                if not self._settle():
                    break
                self._tick()
            else:
                self._drain()
            if self.stats.in_flight:
                self._error(
                    f"stopped with {self.stats.in_flight} message(s) in flight; "
                    "they were not committed and will be shipped again"
                )
        finally:
            self.stats.state = "stopped"
            self._close()
            self._tick(force=True)
        return self.stats

    def _drain(self) -> None:
        """After a stop: finish the batches in flight and commit them, for up to ``shutdown_timeout``."""
        while len(self._order) and self._settle() and len(self._order):
            if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                return
            self._await_reply()
            self._tick()

    # -- one batch ------------------------------------------------------------------------

    def _collect(self) -> tuple[list[Message], dict[Any, Message]]:
        """Poll until a batch is full, its first message has waited ``batch_max_wait``, or stop.

        Returns the messages and, per partition, the last one. An empty poll
        ends the wait when batches are in flight and this one is still empty
        (their replies are not kept waiting), and when nothing is in flight and
        this one has messages (Elasticsearch is idle: send what there is).
        """
        assert self._consumer is not None
        o = self.options
        batch: list[Message] = []
        ends: dict[Any, Message] = {}
        deadline: float | None = None
        while len(batch) < o.batch_size and not self._stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            slice_s = 0.25 if deadline is None else min(0.25, deadline - now)
            busy = self._busy()
            if batch:
                # Elasticsearch idle: take only what is already fetched, then send; busy: look again soon.
                slice_s = min(slice_s, 0.05) if busy else 0.0
            polled = self._consumer.poll(slice_s, o.batch_size - len(batch))
            for tp, records in polled.items():
                floor = self._committed.get(tp, -1)
                if records[0].offset < floor:  # re-read after a rebalance: already committed
                    records = [m for m in records if m.offset >= floor]
                if records:
                    batch.extend(records)
                    ends[tp] = records[-1]
            if not batch and len(self._order):
                break  # the replies of the batches in flight are not kept waiting
            if batch and not busy and not polled:
                # Elasticsearch is idle and nothing more is buffered: a partial batch goes now rather than
                # after batch_max_wait (a trickle is indexed at once; under load batches fill while others index).
                break
            if batch and deadline is None:
                deadline = time.monotonic() + o.batch_max_wait
            self._tick()
        if batch and self.stats.first_at is None:
            self.stats.first_at = time.monotonic()
        self.stats.consumed += len(batch)
        self.stats.in_flight += len(batch)
        return batch, ends

    def _submit(self, messages: Sequence[Message], ends: dict[Any, Message]) -> None:
        """Check *messages*, queue the bulk requests of the good ones, and track the batch for its commit."""
        batch = Batch(len(messages), ends)
        self._prepare(batch, messages)
        self._order.add(batch)
        self._send(batch, range(len(batch.lines)))

    def _prepare(self, batch: Batch, messages: Iterable[Message]) -> None:
        """Turn good messages into bulk lines (their value sent as it came); set the others aside."""
        prefix = self.es_options.index_prefix
        limit = self.options.max_message_bytes
        for message in messages:
            found = ingress.parse(message.value, max_bytes=limit)
            if isinstance(found, ingress.Invalid):
                batch.dead.append(DeadLetter(message, _why(found, limit)))
                continue
            try:
                index = es.index_name(prefix, found.ts)
            except (ValueError, OverflowError, OSError):
                batch.dead.append(DeadLetter(message, f"Time of {found.id!r} is out of range"))
                continue
            batch.sources.append(message)
            batch.indices.append(index)
            batch.lines.append(es.create_line(index, found.id, found.payload))

    def _send(self, batch: Batch, positions: Sequence[int]) -> None:
        """Queue bulk requests for *positions* of *batch*, cut by ``CHUNK_SIZE`` and ``MAX_CHUNK_BYTES``."""
        assert self._pool is not None
        e = self.es_options
        for chunk in es.split(positions, batch.lines, e.chunk_size, e.max_chunk_bytes):
            lines = [batch.lines[p] for p in chunk]
            indices = [batch.indices[p] for p in chunk]
            batch.requests.append((self._pool.submit(es.send_bulk, self._client, lines, indices), chunk))

    def _busy(self) -> bool:
        """True while some bulk request is still running (replies not yet settled do not count)."""
        return any(not future.done() for batch in self._order for future, _ in batch.requests)

    def _await_reply(self, timeout: float = 0.25) -> None:
        """Block until a bulk request in flight finishes, or *timeout*."""
        running = [future for batch in self._order for future, _ in batch.requests]
        if running:
            wait(running, timeout, return_when=FIRST_COMPLETED)
        else:
            self._stop.wait(0.01)

    def _settle(self) -> bool:
        """Account for the replies that came back: retry, dead-letter and commit what is due.

        Returns False when a stop's grace time ran out while Elasticsearch or
        the dead-letter destination was down (nothing more is committed then).
        """
        for batch in self._order:
            if batch.accounted:
                continue
            self._reap(batch)
            if batch.requests:
                continue
            if batch.retry:
                if not self._retry(batch):
                    return False
                continue
            if not self._dead_letter(batch.dead):
                return False
            batch.accounted = True
        done, ends = self._order.release()
        if done:
            self._resume()
            self._commit(ends, sum(batch.size for batch in done))
            self.stats.last_at = time.monotonic()
        return True

    def _reap(self, batch: Batch) -> None:
        """Count the finished requests of *batch*; note refused documents and those to send again."""
        running = []
        for future, chunk in batch.requests:
            if not future.done():
                running.append((future, chunk))
                continue
            reply = future.result()
            if self.stats.on_bulk is not None:
                self.stats.on_bulk(reply.seconds)
            self.stats.indexed += reply.created
            self.stats.duplicates += reply.duplicates
            for item in reply.rejected:
                message = batch.sources[chunk[item.position]]
                batch.dead.append(
                    DeadLetter(message, f"refused by Elasticsearch: {item.reason}", item.status, item.index)
                )
                self.stats.rejected += 1
            retry = reply.retry
            if retry:
                batch.retry.extend(chunk[item.position] for item in retry)
                batch.retry_reason = reply.error or retry[0].reason
            else:
                self._delay = self.es_options.backoff
                if self.stats.state == "waiting for Elasticsearch":
                    self.stats.state = "running"
        batch.requests = running

    def _retry(self, batch: Batch) -> bool:
        """Send the unanswered documents of *batch* again after a backoff; False when stopped meanwhile."""
        self.stats.retries += 1
        self._error(f"Elasticsearch: {len(batch.retry)} document(s) not indexed: {batch.retry_reason}; retrying")
        self.stats.state = "waiting for Elasticsearch"
        if not self._wait(self._delay):
            return False
        self._delay = min(self._delay * 2, self.es_options.max_backoff) or self.es_options.backoff
        positions, batch.retry = sorted(batch.retry), []
        self._send(batch, positions)
        return True

    def _commit(self, ends: Mapping[Any, Message], count: int) -> None:
        """Commit one past each message of *ends* (*count* messages accounted for) for partitions still owned."""
        assert self._consumer is not None
        owned = self._consumer.assignment()
        offsets: dict[TopicPartition, tuple[int, int | None]] = {}
        for tp, message in ends.items():
            if tp in owned and message.offset + 1 > self._committed.get(tp, -1):
                offsets[tp] = (message.offset + 1, message.leader_epoch)
        self.stats.in_flight = max(0, self.stats.in_flight - count)
        if not offsets:
            return
        try:
            self._consumer.commit(offsets, self.es_options.timeout)
        except CommitRefused as exc:
            # The group rebalanced: another member owns these partitions now and
            # reads them from the last commit; its copies are 409 no-ops.
            self.stats.commit_errors += 1
            self._error(f"commit refused after a rebalance ({exc}); the new owner ships them again")
            return
        except CommitFailed as exc:
            # The next successful commit covers these offsets too.
            self.stats.commit_errors += 1
            self._error(f"commit failed: {exc}")
            return
        self.stats.commits += 1
        for tp, (offset, _epoch) in offsets.items():
            self._committed[tp] = offset

    # -- dead letters -----------------------------------------------------------------------

    def _dead_letter(self, dead: list[DeadLetter]) -> bool:
        """Store *dead* durably (retrying with backoff); False when stopped before done."""
        delay = self.es_options.backoff
        while dead:
            try:
                if self.options.dead_letter.startswith("file:"):
                    self._dead_letter_file(Path(self.options.dead_letter[5:]), dead)
                else:
                    self._dead_letter_kafka(dead)
            except Exception as exc:  # noqa: BLE001 - any failure means "not stored yet"
                self.stats.retries += 1
                self._error(
                    f"dead-letter destination {self.options.dead_letter!r} "
                    f"({ENV_PREFIX}DEAD_LETTER): {type(exc).__name__}: {exc}; retrying"
                )
                if not self._wait(delay):
                    return False
                delay = min(delay * 2, self.es_options.max_backoff) or self.es_options.backoff
                continue
            self.stats.dead_lettered += len(dead)
            self._error(f"{len(dead)} message(s) dead-lettered, e.g. {_where(dead[0].message)}: {dead[0].reason}")
            break
        return True

    def _dead_letter_file(self, path: Path, dead: Sequence[DeadLetter]) -> None:
        entries = []
        for letter in dead:
            m = letter.message
            entry: dict[str, Any] = {
                "reason": letter.reason,
                "status": letter.status,
                "index": letter.index,
                "topic": m.topic,
                "partition": m.partition,
                "offset": m.offset,
                "timestamp": m.timestamp,
                "key": None if m.key is None else m.key.decode("utf-8", "backslashreplace"),
                "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            }
            try:
                parsed = orjson.loads(m.value) if m.value is not None else None
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and m.value is not None and len(m.value) <= self.options.max_message_bytes:
                entry["record"] = parsed
            else:
                entry["value"] = None if m.value is None else m.value.decode("utf-8", "backslashreplace")
            entries.append(entry)
        es.append_json_lines(path, entries)

    def _dead_letter_kafka(self, dead: Sequence[DeadLetter]) -> None:
        """Send each message unchanged, plus ``logpipe.dlq.*`` headers, and wait for the acks."""
        producer = self._dlq_producer()
        futures = []
        for letter in dead:
            m = letter.message
            headers = list(m.headers or [])
            headers += [
                (DLQ_HEADER + "reason", letter.reason.encode()),
                (DLQ_HEADER + "topic", m.topic.encode()),
                (DLQ_HEADER + "partition", str(m.partition).encode()),
                (DLQ_HEADER + "offset", str(m.offset).encode()),
            ]
            if letter.status is not None:
                headers.append((DLQ_HEADER + "status", str(letter.status).encode()))
            if letter.index is not None:
                headers.append((DLQ_HEADER + "index", letter.index.encode()))
            topic = self.options.dead_letter.format(topic=m.topic)
            futures.append(producer.send(topic, value=m.value, key=m.key, headers=headers))
        producer.flush(timeout=self.es_options.timeout * 3)
        for future in futures:
            future.get(timeout=0)  # raises the send error, if any

    def _dlq_producer(self) -> KafkaProducer:
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=list(self.options.bootstrap_servers),
                client_id="logpipe-shipper-dlq",
                acks="all",
                linger_ms=5,
                # a dead letter can be as large as the largest message consumed
                max_request_size=max(self.options.max_message_bytes, 1024 * 1024) + 64 * 1024,
            )
        return self._producer

    # -- Kafka plumbing -----------------------------------------------------------------------

    def _make_consumer(self) -> Consumer:
        o = self.options
        settings = ConsumerSettings(
            bootstrap_servers=o.bootstrap_servers,
            group_id=o.group_id,
            client_id=f"logpipe-shipper-{o.group_id}",
            topics=o.topics,
            pattern=o.pattern,
            instance_id=o.instance_id,
            session_timeout=o.session_timeout,
            auto_offset_reset=o.auto_offset_reset,
            max_records=o.batch_size,
            fetch_bytes=max(o.fetch_max_bytes, o.max_message_bytes + 64 * 1024),
        )
        return open_consumer(self.kafka_client, settings, self._revoked, self._assigned, self._error)

    def _revoked(self, partitions: set[TopicPartition]) -> None:
        self.stats.lag = {}

    def _assigned(self, partitions: set[TopicPartition]) -> None:
        self.stats.assigned = len(self._consumer.assignment()) if self._consumer else len(partitions)
        if self._paused and partitions and self._consumer is not None:
            # A partition gained while Elasticsearch is down must not be read either.
            self._consumer.pause(partitions)

    def _wait(self, seconds: float) -> bool:
        """Keep the group membership alive for *seconds* without reading more messages.

        Partitions are paused and ``poll`` is called in short slices (the
        heartbeat thread alone does not satisfy ``max.poll.interval.ms``).
        Returns False when a stop was asked for and its grace time is over.
        """
        assert self._consumer is not None
        consumer = self._consumer
        end = time.monotonic() + seconds
        self._paused = True
        while True:
            if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            consumer.pause(consumer.assignment())
            polled = consumer.poll(min(left, 0.25), self.options.batch_size)
            for records in polled.values():  # should not happen while paused: put them back
                first = min(records, key=lambda m: m.offset)
                consumer.seek(_tp(first), first.offset)
            self._tick()

    def _resume(self) -> None:
        if self._paused and self._consumer is not None:
            self._consumer.resume(self._consumer.paused())
            self._paused = False

    def _install_template(self) -> bool:
        """Put the index template, retrying while Elasticsearch is unreachable; False if stopped."""
        from elasticsearch import ApiError, TransportError

        delay = self.es_options.backoff
        while True:
            try:
                es.install_template(self._client, self.es_options)
                return True
            except (ApiError, TransportError) as exc:
                self.stats.state = "waiting for Elasticsearch"
                self._error(f"cannot install the index template: {exc}; retrying")
            self._tick()
            timeout = delay if self._stop_deadline is None else 0.0
            if self._stop.wait(timeout):
                return False
            delay = min(delay * 2, self.es_options.max_backoff) or self.es_options.backoff

    def _close(self) -> None:
        if self._pool is not None:
            # Requests still running (a stop that gave up) finish on their own; none is waited for.
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:  # noqa: BLE001
                self._error(f"closing the consumer: {exc}")
        if self._producer is not None:
            try:
                self._producer.close(timeout=5.0)
            except Exception as exc:  # noqa: BLE001
                self._error(f"closing the dead-letter producer: {exc}")
        if self._client is not None:
            self._client.close()

    # -- reporting ----------------------------------------------------------------------------

    def _tick(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now < self._next_tick:
            return
        self._next_tick = now + self.options.status_interval
        if self._track_lag and self._consumer is not None and not force:
            self._update_lag()
        with contextlib.suppress(Exception):  # a display must not stop the shipping
            self._progress(self.stats)

    def _update_lag(self) -> None:
        assert self._consumer is not None
        try:
            owned = list(self._consumer.assignment())
            if not owned:
                self.stats.lag = {}
                return
            ends = self._consumer.end_offsets(owned, 2.0)
            lag = {}
            for tp in sorted(owned):
                if tp not in self._committed:
                    committed = self._consumer.committed(tp, 2.0)
                    self._committed[tp] = committed if committed is not None else 0
                lag[f"{tp.topic}[{tp.partition}]"] = max(0, ends.get(tp, 0) - self._committed[tp])
            self.stats.lag = lag
        except Exception as exc:  # noqa: BLE001
            self._error(f"consumer lag: {exc}")

    def _error(self, text: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = text


def _why(invalid: ingress.Invalid, limit: int) -> str:
    """The reason a message is dead-lettered, naming the setting when it is the size limit."""
    if invalid.reason.endswith(f"over the limit of {limit}"):
        return f"message is {invalid.reason}: max_message_bytes ({ENV_PREFIX}MAX_MESSAGE_BYTES)"
    return invalid.reason


def _tp(message: Message) -> TopicPartition:
    return TopicPartition(message.topic, message.partition)


def _where(message: Message) -> str:
    return f"{message.topic}[{message.partition}]@{message.offset}"
