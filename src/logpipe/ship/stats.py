"""What ``logpipe ship`` reports: `ShipStats`, and the consumer lag it shows per partition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..runner import RunStats
from .consumer import Consumer, TopicPartition

__all__ = ["ShipStats", "consumer_lag"]


@dataclass
class ShipStats(RunStats):
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
    #: ``topic[partition]`` -> log end offset minus committed offset.
    lag: dict[str, int] = field(default_factory=dict)
    assigned: int = 0
    #: Called with the seconds of each finished bulk request (`logpipe.metrics`' histogram); None: nobody listens.
    on_bulk: Callable[[float], None] | None = None


def consumer_lag(consumer: Consumer, committed: dict[TopicPartition, int]) -> dict[str, int]:
    """``topic[partition]`` -> log end offset minus committed offset, for the partitions *consumer* owns.

    *committed* (the shipper's own commits) is filled in from the group's
    committed offsets for partitions it has not committed yet.
    """
    owned = list(consumer.assignment())
    if not owned:
        return {}
    ends = consumer.end_offsets(owned, 2.0)
    lag = {}
    for tp in sorted(owned):
        if tp not in committed:
            found = consumer.committed(tp, 2.0)
            committed[tp] = found if found is not None else 0
        lag[f"{tp.topic}[{tp.partition}]"] = max(0, ends.get(tp, 0) - committed[tp])
    return lag
