"""The shipper's loop without servers: a fake consumer, a fake bulk indexer and an in-memory dead-letter sink.

What is pinned down here: offsets are committed only past batches that are
fully accounted for (also when replies come back out of order), documents
Elasticsearch did not take (429, no answer) are sent again, refused (400)
and malformed messages become dead letters, a stop leaves what is in flight
uncommitted, and a rebalance never commits a partition the shipper lost.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeConsumer, FakeIndexer, MemorySink

from conftest import wait_until
from logpipe.elasticsearch import ElasticsearchOptions
from logpipe.record import make_record
from logpipe.ship import ShipOptions, Shipper, ShipStats, TopicPartition

P0, P1, P2 = (TopicPartition("logs", n) for n in range(3))


def _records(n: int, start: int = 0) -> list[Any]:
    return [make_record(type="info", msg=f"m{i}") for i in range(start, start + n)]


class Harness:
    """A `Shipper` over the fakes, running on a thread."""

    def __init__(self, consumer: FakeConsumer, indexer: FakeIndexer, sink: MemorySink, **ship: Any) -> None:
        settings = {"topics": ("logs",), "batch_size": 10, "batch_max_wait": 0.05, "status_interval": 0.1, **ship}
        options = ShipOptions(**settings)
        es_options = ElasticsearchOptions(install_template=False, backoff=0.01, max_backoff=0.05, chunk_size=5)
        self.ticks: list[ShipStats] = []
        self.consumer, self.indexer, self.sink = consumer, indexer, sink
        self.shipper = Shipper(
            options,
            es_options,
            progress=self.ticks.append,
            consumer=consumer.open,
            indexer=indexer,
            dead_letters=sink,
        )
        self.result: ShipStats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.shipper.run()

    @property
    def stats(self) -> ShipStats:
        return self.shipper.stats

    def committed(self) -> dict[TopicPartition, int]:
        return dict(self.consumer.committed_offsets)

    def loops(self, rounds: int = 2) -> bool:
        """Wait until the shipper has gone round its loop *rounds* more times (progress ticks)."""
        seen = len(self.ticks)
        return bool(wait_until(lambda: len(self.ticks) >= seen + rounds, 10))

    def stop(self) -> ShipStats:
        self.shipper.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "shipper did not stop"
        assert self.result is not None
        return self.result


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    started: list[Harness] = []
    yield started
    for harness in started:
        if harness.thread.is_alive():
            harness.stop()


def _start(
    harnesses: list[Harness], consumer: FakeConsumer, indexer: FakeIndexer, sink: MemorySink, **ship: Any
) -> Harness:
    harness = Harness(consumer, indexer, sink, **ship)
    harnesses.append(harness)
    return harness


class TestShipping:
    def test_everything_indexed_once_and_committed(self, harnesses: list[Harness]) -> None:
        """Every record of every partition is created once; the commits reach each partition's end."""
        logs = {tp: [r.payload for r in _records(23, 100 * tp.partition)] for tp in (P0, P1, P2)}
        h = _start(harnesses, FakeConsumer(logs), FakeIndexer(), MemorySink())
        assert wait_until(lambda: h.committed() == {P0: 23, P1: 23, P2: 23}, 20)
        stats = h.stop()
        assert len(h.indexer.documents) == 69 and stats.indexed == 69 and stats.duplicates == 0
        assert stats.in_flight == 0 and stats.dead_lettered == 0 and h.consumer.closed and h.indexer.closed

    def test_redelivered_records_are_duplicates(self, harnesses: list[Harness]) -> None:
        """A record already indexed (redelivered after a crash) is answered 409 and counted, not indexed again."""
        records = _records(6)
        indexer = FakeIndexer()
        for r in records[:3]:
            indexer.documents[r.id] = "logpipe-x"
        h = _start(harnesses, FakeConsumer({P0: [r.payload for r in records]}), indexer, MemorySink())
        assert wait_until(lambda: h.committed() == {P0: 6}, 20)
        stats = h.stop()
        assert (stats.indexed, stats.duplicates) == (3, 3)


class TestCommitOrder:
    def test_no_commit_past_a_batch_whose_reply_is_late(self, harnesses: list[Harness]) -> None:
        """The first batch's request hangs while the next batch is indexed: nothing is committed until it replies."""
        indexer = FakeIndexer()
        gate = indexer.hold()
        records = _records(20)
        h = _start(harnesses, FakeConsumer({P0: [r.payload for r in records]}), indexer, MemorySink(), concurrency=4)
        # the later requests (second half of batch 1, then batch 2) are answered while the first hangs ...
        assert wait_until(lambda: indexer.answered >= 3, 10)
        assert h.loops()
        # ... yet no offset moves past the batch whose request is still out
        assert h.consumer.commits == [] and h.stats.in_flight == 20
        gate.set()
        assert wait_until(lambda: h.committed() == {P0: 20}, 10)
        stats = h.stop()
        assert len(indexer.documents) == 20 and stats.in_flight == 0
        offsets = [commit[P0] for commit in h.consumer.commits]
        assert offsets == sorted(offsets)  # commits only ever move forward


class TestRetries:
    def test_429_items_are_sent_again(self, harnesses: list[Harness]) -> None:
        """Documents answered 429 (twice) are retried with backoff; nothing is committed before they are in."""
        records = _records(8)
        indexer = FakeIndexer()
        indexer.statuses[records[2].id].extend([429, 429])
        h = _start(harnesses, FakeConsumer({P0: [r.payload for r in records]}), indexer, MemorySink())
        assert wait_until(lambda: h.committed() == {P0: 8}, 20)
        stats = h.stop()
        assert set(indexer.documents) == {r.id for r in records}
        assert stats.retries == 2 and stats.dead_lettered == 0 and stats.indexed == 8

    def test_requests_without_an_answer_are_sent_again(self, harnesses: list[Harness]) -> None:
        """Requests that got no answer (node down) are sent again until they get one; then the commit."""
        records = _records(10)
        indexer = FakeIndexer()
        indexer.unanswered = 3
        h = _start(harnesses, FakeConsumer({P0: [r.payload for r in records]}), indexer, MemorySink())
        assert wait_until(lambda: h.committed() == {P0: 10}, 20)
        stats = h.stop()
        assert set(indexer.documents) == {r.id for r in records} and stats.indexed == 10
        assert stats.retries >= 1 and "ConnectionError" in (stats.last_error or "")

    def test_paused_while_waiting_and_resumed_after(self, harnesses: list[Harness]) -> None:
        """While a retry waits the partitions are paused (no more reading); they are resumed once committed."""
        records = _records(5)
        indexer = FakeIndexer()
        indexer.unanswered = 1000
        h = _start(harnesses, FakeConsumer({P0: [r.payload for r in records]}), indexer, MemorySink())
        assert wait_until(lambda: h.consumer.paused() == {P0}, 10)
        assert h.stats.state == "waiting for Elasticsearch" and h.consumer.commits == []
        indexer.unanswered = 0
        assert wait_until(lambda: h.committed() == {P0: 5}, 20)
        assert wait_until(lambda: h.consumer.paused() == set() and h.stats.state == "running", 10)


class TestDeadLetters:
    def test_refused_and_oversize_messages(self, harnesses: list[Harness]) -> None:
        """A 400 and an oversize message become dead letters with their source; text is indexed; all committed."""
        good = _records(4)
        indexer = FakeIndexer()
        indexer.statuses[good[1].id].append(400)
        values = [good[0].payload, b"not json", good[1].payload, b"x" * 2_000_000, good[2].payload, good[3].payload]
        sink = MemorySink()
        h = _start(harnesses, FakeConsumer({P0: values}), indexer, sink)
        assert wait_until(lambda: h.committed() == {P0: 6}, 20)
        stats = h.stop()
        letters = {letter.source["offset"]: letter for letter in sink.letters}
        assert sorted(letters) == [2, 3]
        assert letters[2].status == 400 and "refused by Elasticsearch" in letters[2].reason
        assert "mapper_parsing_exception" in letters[2].reason and letters[2].index
        assert letters[3].status is None and "MAX_MESSAGE_BYTES" in letters[3].reason
        for offset, letter in letters.items():
            assert letter.value == values[offset] and letter.key == b"k" and list(letter.headers) == [("h", b"1")]
            assert letter.source == {"topic": "logs", "partition": 0, "offset": offset}
        assert (stats.dead_lettered, stats.rejected, stats.indexed) == (2, 1, 4)
        assert set(indexer.documents) == {good[0].id, "logs+0+1", good[2].id, good[3].id}

    def test_no_commit_until_the_dead_letters_are_stored(self, harnesses: list[Harness]) -> None:
        """A failing dead-letter sink is retried; the batch is committed only once its letters are stored."""
        sink = MemorySink(failures=3)
        h = _start(
            harnesses, FakeConsumer({P0: [b"x" * 2_000_000, *(r.payload for r in _records(3))]}), FakeIndexer(), sink
        )
        assert wait_until(lambda: h.committed() == {P0: 4}, 20)
        stats = h.stop()
        assert len(sink.letters) == 1 and stats.retries == 3 and stats.dead_lettered == 1


class TestStop:
    def test_stop_with_batches_in_flight_commits_nothing(self, harnesses: list[Harness]) -> None:
        """Elasticsearch never answers: after the grace time the shipper stops, with nothing committed."""
        indexer = FakeIndexer()
        indexer.unanswered = 10**6
        h = _start(
            harnesses,
            FakeConsumer({P0: [r.payload for r in _records(15)]}),
            indexer,
            MemorySink(),
            shutdown_timeout=0.3,
        )
        assert wait_until(lambda: h.stats.retries >= 1, 10)
        stats = h.stop()
        assert h.consumer.commits == [] and stats.in_flight == 15 and stats.state == "stopped"
        assert "not committed" in (stats.last_error or "")

    def test_stop_finishes_the_batches_in_flight(self, harnesses: list[Harness]) -> None:
        """A stop while a request is out waits for it (within the grace time) and commits it."""
        indexer = FakeIndexer()
        gate = indexer.hold()
        h = _start(harnesses, FakeConsumer({P0: [r.payload for r in _records(5)]}), indexer, MemorySink())
        assert wait_until(lambda: indexer.requests >= 1, 10)
        h.shipper.stop()
        gate.set()
        stats = h.stop()
        assert h.committed() == {P0: 5} and stats.in_flight == 0


class TestRebalance:
    def test_lost_partition_is_not_committed(self, harnesses: list[Harness]) -> None:
        """A partition revoked while its batch is in flight is not committed; a partition gained is shipped."""
        indexer = FakeIndexer()
        gate = indexer.hold()
        logs = {P0: [r.payload for r in _records(3)], P1: [r.payload for r in _records(3, 10)]}
        consumer = FakeConsumer(logs)
        consumer.logs[P2] = FakeConsumer({P2: [r.payload for r in _records(4, 20)]}).logs[P2]
        h = _start(harnesses, consumer, indexer, MemorySink())
        assert wait_until(lambda: indexer.requests >= 1, 10)
        consumer.rebalance(revoke={P1}, assign={P2})
        assert wait_until(lambda: ("assigned", {P2}) in consumer.events, 10)
        gate.set()
        assert wait_until(lambda: h.committed() == {P0: 3, P2: 4}, 20)
        stats = h.stop()
        assert all(P1 not in commit for commit in consumer.commits)
        assert stats.commit_errors == 0 and len(indexer.documents) == 10
        assert stats.assigned == 2

    def test_partition_gained_while_paused_is_paused(self, harnesses: list[Harness]) -> None:
        """While Elasticsearch is down, a newly assigned partition is paused too: nothing more is read."""
        indexer = FakeIndexer()
        indexer.unanswered = 10**6
        consumer = FakeConsumer({P0: [r.payload for r in _records(3)]})
        consumer.logs[P1] = FakeConsumer({P1: [r.payload for r in _records(3, 10)]}).logs[P1]
        h = _start(harnesses, consumer, indexer, MemorySink())
        assert wait_until(lambda: consumer.paused() == {P0}, 10)
        consumer.rebalance(assign={P1})
        assert wait_until(lambda: consumer.paused() == {P0, P1}, 10)
        assert consumer.positions[P1] == 0 and h.stats.consumed == 3
        indexer.unanswered = 0
        assert wait_until(lambda: h.committed() == {P0: 3, P1: 3}, 20)
