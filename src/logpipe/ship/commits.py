"""Committing Kafka offsets past what Elasticsearch has: forward only, and only for partitions still owned.

The shipper's commit hook (the acknowledged front of `logpipe.inflight.InFlight`)
ends here. A partition taken away by a rebalance is not committed (its new
owner reads it from the last commit, and its copies are 409 no-ops); a commit
that fails is not retried on its own, since the next one covers its offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .batches import Batch
from .consumer import CommitFailed, CommitRefused, Consumer, Message, TopicPartition
from .stats import ShipStats

__all__ = ["Commits", "last_messages"]


def last_messages(batches: Iterable[Batch]) -> dict[TopicPartition, Message]:
    """Per partition, the last message of *batches*: the commit goes one past it."""
    ends: dict[TopicPartition, Message] = {}
    for batch in batches:
        for tp, message in batch.ends.items():
            if tp not in ends or message.offset > ends[tp].offset:
                ends[tp] = message
    return ends


class Commits:
    """What this shipper committed per partition, and the commits themselves."""

    def __init__(self, stats: ShipStats, timeout: float, error: Callable[[str], None]) -> None:
        self.stats = stats
        self.timeout = timeout
        self.error = error
        #: Next offset per partition that this shipper committed (filters re-reads, measures lag).
        self.committed: dict[TopicPartition, int] = {}

    def commit(self, consumer: Consumer, ends: dict[TopicPartition, Message], count: int) -> None:
        """Commit one past each message of *ends* (*count* messages accounted for) for partitions still owned."""
        owned = consumer.assignment()
        offsets: dict[TopicPartition, tuple[int, int | None]] = {}
        for tp, message in ends.items():
            if tp in owned and message.offset + 1 > self.committed.get(tp, -1):
                offsets[tp] = (message.offset + 1, message.leader_epoch)
        self.stats.in_flight = max(0, self.stats.in_flight - count)
        if not offsets:
            return
        try:
            consumer.commit(offsets, self.timeout)
        except CommitRefused as exc:
            # The group rebalanced: another member owns these partitions now and
            # reads them from the last commit; its copies are 409 no-ops.
            self.stats.commit_errors += 1
            self.error(f"commit refused after a rebalance ({exc}); the new owner ships them again")
            return
        except CommitFailed as exc:
            # The next successful commit covers these offsets too.
            self.stats.commit_errors += 1
            self.error(f"commit failed: {exc}")
            return
        self.stats.commits += 1
        for tp, (offset, _epoch) in offsets.items():
            self.committed[tp] = offset
