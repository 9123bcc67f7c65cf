"""The `Shipper` loop: consume KafkaLog records from Kafka and bulk-index them into Elasticsearch.

The delivery guarantee is at least once, without duplicate documents:

* offsets are committed only after every message of a batch, and of every
  batch polled before it, is accounted for: created in Elasticsearch,
  already there (409), or written to the dead-letter destination. Bulk
  requests are the flights of a `logpipe.inflight.InFlight` whose commit
  unit is the `Batch`, so requests of several batches run at once and the
  commit hook sees only the acknowledged front. A crash at any point
  redelivers the uncommitted messages, and because each document's ``_id``
  is the record's ``Id`` the redelivered ones are no-ops (409);
* while Elasticsearch is unreachable the documents are retried with a
  `logpipe.backoff.Backoff`, nothing is committed, and the consumer keeps
  calling ``poll`` with its partitions paused, so the group does not evict it
  (``max.poll.interval.ms``) and no more messages pile up in memory;
* messages that can never be indexed (`logpipe.ingress.parse` says why, or
  Elasticsearch refuses them with a 4xx) go to the dead-letter sink with the
  reason and their topic, partition and offset, and shipping goes on.

The consumer and the bulk indexer are arguments (the real ones by default),
so the loop is tested with in-memory fakes (``tests/ship/test_shipper_logic.py``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .. import elasticsearch as es
from ..backoff import Backoff
from ..deadletter import DeadLetter
from ..inflight import Deferred, Done, InFlight, Pending
from ..redact import Redactor
from ..runner import Runner
from .batches import Batch, prepare
from .commits import Commits, last_messages
from .consumer import (
    Consumer,
    ConsumerFactory,
    Message,
    TopicPartition,
    kafka_consumer,
    keep_alive,
    resolve_client,
)
from .deadletters import DeadLetterSink, letter, open_sink
from .options import ENV_PREFIX, ShipOptions, zone
from .stats import ShipStats, consumer_lag

__all__ = ["BATCHES_IN_FLIGHT", "ConsumerFactory", "Flight", "ShipStats", "Shipper"]

#: Batches open at once: the one whose bulk requests run, and the next one,
#: polled and checked meanwhile so that Elasticsearch never waits for Kafka.
BATCHES_IN_FLIGHT = 2


@dataclass(frozen=True)
class Flight:
    """One bulk request's outcome: the batch positions it carried and the reply."""

    chunk: Sequence[int]
    reply: es.BulkReply


#: The outcome of a flight that raised: it carried nothing known, so its positions stay unanswered (sent again).
_LOST = Flight((), es.BulkReply(error="the bulk request raised"))


class Shipper(Runner[ShipStats]):
    """Consumes KafkaLog messages and indexes them; `run` blocks until `stop`.

    *progress* is called from the shipper's thread every ``status_interval``
    seconds (and once at the end) with the current `ShipStats`; with
    *track_lag* the stats carry per-partition consumer lag. *consumer*,
    *indexer* and *dead_letters* replace the Kafka consumer, the
    Elasticsearch client and the dead-letter sink (tests pass fakes).
    """

    def __init__(
        self,
        options: ShipOptions,
        es_options: es.ElasticsearchOptions,
        *,
        progress: Callable[[ShipStats], None] | None = None,
        track_lag: bool = False,
        consumer: ConsumerFactory | None = None,
        indexer: es.BulkIndexer | None = None,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        super().__init__(
            ShipStats(),
            shutdown_timeout=options.shutdown_timeout,
            status_interval=options.status_interval,
            progress=progress,
        )
        self.options = options
        self._zone = zone(options.default_timezone)
        self._redactor = Redactor(options.redact_keys, options.redact_pattern) if options.redact else None
        self.es_options = es_options
        self._track_lag = track_lag
        #: The Kafka client library in use (`resolve_client`'s answer), for humans.
        self.kafka_client = (
            "given"
            if consumer is not None
            else resolve_client(options.kafka_client, f"{ENV_PREFIX}KAFKA_CLIENT", pattern=options.pattern)
        )
        self._open_consumer: ConsumerFactory = consumer or kafka_consumer(options, self.kafka_client)
        self._indexer = indexer
        self._sink = dead_letters
        self._consumer: Consumer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: InFlight[Batch, Flight] = InFlight(
            options.concurrency, failed=_LOST, commit=self._commit_front, report=self.error
        )
        #: Bulk requests submitted and maybe still running (pruned as they finish).
        self._requests: list[Future[Flight]] = []
        self._bulk_backoff = self._letter_backoff = self._es_backoff()
        self._paused = False
        #: Kafka offsets committed past the acknowledged front (`logpipe.ship.commits`).
        self._commits = Commits(self.stats, es_options.timeout, self.error)

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
            self._indexer = self._indexer or es.ClientIndexer(self.es_options)
            self._sink = self._sink or open_sink(self.options, self.es_options.timeout * 3)
            self._bulk_backoff, self._letter_backoff = self._es_backoff(), self._es_backoff()
            if self.es_options.install_template and not self._install_template():
                return self.stats
            self._consumer = self._open_consumer(self._revoked, self._assigned, self.error)
            self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="logpipe-bulk")
            self.stats.state = "running"
            self._loop()
            if self.stats.in_flight:
                self.error(
                    f"stopped with {self.stats.in_flight} message(s) in flight; "
                    "they were not committed and will be shipped again"
                )
        finally:
            self.stats.state = "stopped"
            self._close()
            self.tick(force=True)
        return self.stats

    def _loop(self) -> None:
        """Poll a batch while fewer than `BATCHES_IN_FLIGHT` are open, settle replies; after a stop, drain."""
        while not self.stopping:
            if self._inflight.open < BATCHES_IN_FLIGHT:
                messages, ends = self._collect()
                if messages:
                    self._submit(messages, ends)
                settled = self._settle(0)
            else:
                settled = self._settle(0.25)
            if not settled:
                return
            self.tick()
        while self._inflight.open and not self.out_of_time() and self._settle(0.25):
            self.tick()

    # -- one batch ------------------------------------------------------------------------

    def _collect(self) -> tuple[list[Message], dict[TopicPartition, Message]]:
        """Poll until a batch is full, its first message has waited ``batch_max_wait``, or stop.

        Returns the messages and, per partition, the last one. An empty poll
        ends the wait when batches are in flight and this one is still empty
        (their replies are not kept waiting), and when nothing is in flight and
        this one has messages (Elasticsearch is idle: send what there is).
        """
        assert self._consumer is not None
        o = self.options
        batch: list[Message] = []
        ends: dict[TopicPartition, Message] = {}
        deadline: float | None = None
        while len(batch) < o.batch_size and not self.stopping:
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
                floor = self._commits.committed.get(tp, -1)
                if records[0].offset < floor:  # re-read after a rebalance: already committed
                    records = [m for m in records if m.offset >= floor]
                if records:
                    batch.extend(records)
                    ends[tp] = records[-1]
            if not batch and self._inflight.open:
                break  # the replies of the batches in flight are not kept waiting
            if batch and not busy and not polled:
                # Elasticsearch is idle and nothing more is buffered: a partial batch goes now rather than
                # after batch_max_wait (a trickle is indexed at once; under load batches fill while others index).
                break
            if batch and deadline is None:
                deadline = time.monotonic() + o.batch_max_wait
            self.tick()
        if batch and self.stats.first_at is None:
            self.stats.first_at = time.monotonic()
        self.stats.consumed += len(batch)
        self.stats.in_flight += len(batch)
        return batch, ends

    def _submit(self, messages: Sequence[Message], ends: dict[TopicPartition, Message]) -> None:
        """Check *messages* and start the bulk requests of the good ones; the batch takes its commit place."""
        batch = prepare(
            messages, ends, self.es_options.index_prefix, self.options.max_message_bytes, self._zone, self._redactor
        )
        self._send(batch, range(len(batch.lines)))

    def _send(self, batch: Batch, positions: Sequence[int]) -> None:
        """Begin one flight per bulk request of *positions* (a batch with nothing to index gets an empty one)."""
        e = self.es_options
        chunks = batch.chunks(positions, e.chunk_size, e.max_chunk_bytes)
        if not chunks:
            self._inflight.begin(batch, lambda: Done(Flight((), es.BulkReply())))
        for chunk in chunks:
            batch.waiting.update(chunk)
            self._inflight.begin(batch, functools.partial(self._start, batch, chunk))

    def _start(self, batch: Batch, chunk: list[int]) -> Pending[Flight]:
        assert self._pool is not None
        lines = [batch.lines[p] for p in chunk]
        indices = [batch.indices[p] for p in chunk]
        future = self._pool.submit(self._request, chunk, lines, indices)
        self._requests.append(future)
        return Deferred(future)

    def _request(self, chunk: list[int], lines: list[bytes], indices: list[str]) -> Flight:
        """On a bulk thread: one request; an exception of the indexer means "no answer" (sent again)."""
        assert self._indexer is not None
        try:
            reply = self._indexer.send(lines, indices)
        except Exception as exc:  # noqa: BLE001 - the documents are retried, the loop must go on
            reply = es.BulkReply.unanswered(indices, f"{type(exc).__name__}: {exc}")
        return Flight(chunk, reply)

    def _busy(self) -> bool:
        """True while some bulk request is still running (replies not yet settled do not count)."""
        self._requests = [future for future in self._requests if not future.done()]
        return bool(self._requests)

    # -- settling -----------------------------------------------------------------------------

    def _settle(self, timeout: float) -> bool:
        """Account for the replies that are in, oldest first, waiting up to *timeout* for the first.

        Returns False when a stop's grace time ran out while Elasticsearch or
        the dead-letter destination was down (nothing more is committed then).
        """
        wait = timeout
        while (settled := self._inflight.settle(timeout=wait)) is not None:
            wait = 0
            if not self._account(*settled):
                return False
        return True

    def _account(self, batch: Batch, flight: Flight) -> bool:
        """Count one reply; once *batch* has no request out, retry, dead-letter or acknowledge it."""
        reply = flight.reply
        if self.stats.on_bulk is not None and flight.chunk:
            self.stats.on_bulk(reply.seconds)
        self.stats.indexed += reply.created
        self.stats.duplicates += reply.duplicates
        for item in batch.answered(flight.chunk, reply):
            reason = f"refused by Elasticsearch: {item.reason}"
            batch.dead.append(letter(batch.sources[item.position], reason, item.status, item.index))
            self.stats.rejected += 1
        if flight.chunk and not reply.retry:
            self._bulk_backoff.reset()
            if self.stats.state == "waiting for Elasticsearch":
                self.stats.state = "running"
        if self._inflight.flying(batch):
            return True
        batch.unanswered()
        if batch.retry:
            return self._retry(batch)
        if not self._dead_letter(batch.dead):
            return False
        batch.dead = []
        self._inflight.acknowledge(batch)  # commits the acknowledged front, see _commit_front
        return True

    def _retry(self, batch: Batch) -> bool:
        """Send the unanswered documents of *batch* again after a backoff; False when out of time meanwhile."""
        self.stats.retries += 1
        self.error(f"Elasticsearch: {len(batch.retry)} document(s) not indexed: {batch.retry_reason}; retrying")
        self.stats.state = "waiting for Elasticsearch"
        if not self._hold(self._bulk_backoff.delay()):
            return False
        self._send(batch, batch.take_retry())
        return True

    def _commit_front(self, front: list[Batch]) -> None:
        """The `InFlight` commit hook: commit one past the last message per partition of *front*."""
        assert self._consumer is not None
        self._resume()
        self._commits.commit(self._consumer, last_messages(front), sum(batch.size for batch in front))
        self.stats.last_at = time.monotonic()

    def _dead_letter(self, dead: list[DeadLetter]) -> bool:
        """Store *dead* durably (retrying with backoff); False when out of time before done."""
        assert self._sink is not None
        while dead:
            try:
                self._sink.write(dead)
            except Exception as exc:  # noqa: BLE001 - any failure means "not stored yet"
                self.stats.retries += 1
                self.error(
                    f"dead-letter destination {self._sink.describe()!r} "
                    f"({ENV_PREFIX}DEAD_LETTER): {type(exc).__name__}: {exc}; retrying"
                )
                if not self._hold(self._letter_backoff.delay()):
                    return False
                continue
            self._letter_backoff.reset()
            self.stats.dead_lettered += len(dead)
            first = dead[0]
            where = "{topic}[{partition}]@{offset}".format(**first.source)
            self.error(f"{len(dead)} message(s) dead-lettered, e.g. {where}: {first.reason}")
            break
        return True

    # -- Kafka plumbing -----------------------------------------------------------------------

    def _revoked(self, partitions: set[TopicPartition]) -> None:
        self.stats.lag = {}

    def _assigned(self, partitions: set[TopicPartition]) -> None:
        self.stats.assigned = len(self._consumer.assignment()) if self._consumer else len(partitions)
        if self._paused and partitions and self._consumer is not None:
            # A partition gained while Elasticsearch is down must not be read either.
            self._consumer.pause(partitions)

    def _hold(self, seconds: float) -> bool:
        """Wait *seconds* with the partitions paused (see `keep_alive`); False when a stop's grace time is over."""
        assert self._consumer is not None
        self._paused = True
        return keep_alive(self._consumer, seconds, self.options.batch_size, self.out_of_time, self.tick)

    def _resume(self) -> None:
        if self._paused and self._consumer is not None:
            self._consumer.resume(self._consumer.paused())
            self._paused = False

    def _install_template(self) -> bool:
        """Put the index template, retrying while Elasticsearch is unreachable; False if stopped."""
        assert self._indexer is not None
        backoff = self._es_backoff()
        while True:
            try:
                self._indexer.install_template()
                return True
            except es.Unreachable as exc:
                self.stats.state = "waiting for Elasticsearch"
                self.error(f"cannot install the index template: {exc}; retrying")
            self.tick()
            if not backoff.wait():
                return False

    def _es_backoff(self) -> Backoff:
        """Delays from ``LOGPIPE_ELASTICSEARCH_BACKOFF`` to ``MAX_BACKOFF``, ended early by `stop`."""
        return es.backoff(self.es_options, self._stop)

    def _close(self) -> None:
        if self._pool is not None:
            # Requests still running (a stop that gave up) finish on their own; none is waited for.
            self._pool.shutdown(wait=False, cancel_futures=True)
        for name, part in (("consumer", self._consumer), ("dead-letter sink", self._sink), ("client", self._indexer)):
            if part is None:
                continue
            try:
                part.close()
            except Exception as exc:  # noqa: BLE001
                self.error(f"closing the {name}: {exc}")

    # -- reporting ----------------------------------------------------------------------------

    def before_tick(self, force: bool) -> None:
        if self._track_lag and self._consumer is not None and not force:
            self._update_lag()

    def _update_lag(self) -> None:
        assert self._consumer is not None
        try:
            self.stats.lag = consumer_lag(self._consumer, self._commits.committed)
        except Exception as exc:  # noqa: BLE001
            self.error(f"consumer lag: {exc}")
