"""In-memory stand-ins for the shipper's consumer, bulk indexer and dead-letter sink (real objects, no servers)."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from logpipe import elasticsearch as es
from logpipe.deadletter import DeadLetter
from logpipe.ship.consumer import CommitRefused, Message, Rebalance, TopicPartition


class FakeMessage(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    leader_epoch: int | None


class FakeConsumer:
    """A consumer group of one over in-memory partitions; commits and rebalances are recorded."""

    name = "fake"

    def __init__(self, partitions: Mapping[TopicPartition, Sequence[bytes]]) -> None:
        self.logs: dict[TopicPartition, list[FakeMessage]] = {}
        for tp, values in partitions.items():
            self.logs[tp] = [
                FakeMessage(tp.topic, tp.partition, i, None, b"k", v, [("h", b"1")], 3) for i, v in enumerate(values)
            ]
        self.owned: set[TopicPartition] = set()
        self.to_assign: set[TopicPartition] = set(partitions)
        self.to_revoke: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.events: list[tuple[str, set[TopicPartition]]] = []
        self._paused: set[TopicPartition] = set()
        self._arrived = threading.Event()
        self.closed = False

    def open(self, on_revoked: Rebalance, on_assigned: Rebalance, on_error: Any) -> FakeConsumer:
        """The `ConsumerFactory` the shipper calls."""
        self._on_revoked, self._on_assigned = on_revoked, on_assigned
        return self

    def rebalance(self, revoke: Iterable[TopicPartition] = (), assign: Iterable[TopicPartition] = ()) -> None:
        """Take and give partitions at the next poll, as the group coordinator would."""
        self.to_revoke |= set(revoke)
        self.to_assign |= set(assign)
        self._arrived.set()

    def poll(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Message]]:
        self._apply_rebalance()
        found: dict[TopicPartition, list[Message]] = {}
        for tp in sorted(self.owned - self._paused):
            start = self.positions[tp]
            taken = self.logs[tp][start : start + max_records - sum(map(len, found.values()))]
            if taken:
                found[tp] = list(taken)
                self.positions[tp] = start + len(taken)
        if not found:
            self._arrived.wait(timeout)  # what a real poll does: wait for news, up to the timeout
            self._arrived.clear()
        return found

    def _apply_rebalance(self) -> None:
        if self.to_revoke:
            gone, self.to_revoke = self.to_revoke & self.owned, set()
            self.owned -= gone
            self._paused -= gone
            self.events.append(("revoked", gone))
            self._on_revoked(gone)
        if self.to_assign:
            new, self.to_assign = self.to_assign - self.owned, set()
            self.owned |= new
            for tp in new:
                self.positions[tp] = self.committed_offsets.get(tp, 0)
            self.events.append(("assigned", new))
            self._on_assigned(new)

    def commit(self, offsets: Mapping[TopicPartition, tuple[int, int | None]], timeout: float) -> None:
        if not set(offsets) <= self.owned:
            raise CommitRefused("not a member of the generation that owns these partitions")
        self.commits.append({tp: offset for tp, (offset, _epoch) in offsets.items()})
        self.committed_offsets.update(self.commits[-1])

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused |= set(partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused -= set(partitions)

    def paused(self) -> set[TopicPartition]:
        return self._paused & self.owned

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    def end_offsets(self, partitions: Sequence[TopicPartition], timeout: float) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in partitions}

    def committed(self, partition: TopicPartition, timeout: float) -> int | None:
        return self.committed_offsets.get(partition)

    def close(self) -> None:
        self.closed = True


class FakeIndexer:
    """An in-memory Elasticsearch: ``create`` with ``_id`` semantics, and scripted trouble.

    *statuses* gives, per document Id, the statuses to answer on its next
    sends (429, 400 ...; then it is created). *unanswered* is how many of
    the next requests get no answer at all. `hold` makes the next request
    wait until `release`.
    """

    def __init__(self) -> None:
        self.documents: dict[str, str] = {}
        self.statuses: dict[str, deque[int]] = defaultdict(deque)
        self.unanswered = 0
        self.requests = 0
        self.answered = 0
        self._lock = threading.Lock()
        self._gates: deque[threading.Event] = deque()
        self.closed = False

    def hold(self) -> threading.Event:
        """The next request waits until the returned event is set."""
        gate = threading.Event()
        self._gates.append(gate)
        return gate

    def send(self, lines: Sequence[bytes], indices: Sequence[str]) -> es.BulkReply:
        with self._lock:
            self.requests += 1
            gate = self._gates.popleft() if self._gates else None
            silent = self.unanswered > 0
            self.unanswered -= silent
        if gate is not None:
            gate.wait(30)
        try:
            if silent:
                return es.BulkReply.unanswered(indices, "ConnectionError: connection refused")
            return self._answer(lines, indices)
        finally:
            with self._lock:
                self.answered += 1

    def _answer(self, lines: Sequence[bytes], indices: Sequence[str]) -> es.BulkReply:
        reply = es.BulkReply()
        for position, (line, index) in enumerate(zip(lines, indices, strict=True)):
            doc_id = orjson.loads(line.split(b"\n", 1)[0])["create"]["_id"]
            with self._lock:
                scripted = self.statuses[doc_id].popleft() if self.statuses[doc_id] else None
                if scripted is None and doc_id in self.documents:
                    reply.duplicates += 1
                    continue
                if scripted is None:
                    self.documents[doc_id] = index
                    reply.created += 1
                    continue
            error = {"type": "mapper_parsing_exception" if scripted == 400 else "es_rejected_execution_exception"}
            reply.failed.append(es.ItemResult(position, index, scripted, error))
        return reply

    def install_template(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class MemorySink:
    """Dead letters kept in a list; the first *failures* writes raise."""

    def __init__(self, failures: int = 0) -> None:
        self.letters: list[DeadLetter] = []
        self.failures = failures

    def write(self, letters: Sequence[DeadLetter]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.letters.extend(letters)

    def describe(self) -> str:
        return "memory"

    def close(self) -> None:
        pass
