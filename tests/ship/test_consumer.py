"""Tests for logpipe.ship.consumer: both client libraries against the real broker, through the one interface."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import KAFKA_CLIENTS, Service, wait_until
from logpipe.kafkaclient import Connection
from logpipe.ship.consumer import ConsumerSettings, TopicPartition, open_consumer

pytestmark = pytest.mark.kafka


@pytest.fixture
def topic(kafka_service: Service) -> Iterator[str]:
    """A fresh one-partition topic holding three messages (offsets 0-2), deleted afterwards."""
    from kafka import KafkaAdminClient, KafkaProducer

    name = f"lptest-consumer-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_service.address)
    admin.create_topics({name: {"num_partitions": 1, "replication_factor": 1}})
    producer = KafkaProducer(bootstrap_servers=kafka_service.address, acks="all")
    for i in range(3):
        producer.send(name, value=b'{"n":%d}' % i, key=b"k", headers=[("id", b"%d" % i)])
    producer.flush(30)
    producer.close()
    yield name
    admin.delete_topics([name], raise_errors=False)
    admin.close()


@pytest.fixture(params=KAFKA_CLIENTS)
def consumer(request: pytest.FixtureRequest, kafka_service: Service, topic: str) -> Iterator[Any]:
    events: list[tuple[str, set[TopicPartition]]] = []
    settings = ConsumerSettings(
        connection=Connection.of(kafka_service.address, "lptest", variable="LOGPIPE_TEST_KAFKA_BOOTSTRAP"),
        group_id=f"lptest-{uuid.uuid4().hex[:10]}",
        topics=(topic,),
        session_timeout=10.0,
    )
    c = open_consumer(
        request.param,
        settings,
        lambda tps: events.append(("revoked", tps)),
        lambda tps: events.append(("assigned", tps)),
    )
    c.events = events  # type: ignore[attr-defined]
    yield c
    c.close()


def _poll_until(consumer: Any, count: int, timeout: float = 60.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for messages in consumer.poll(0.5, 1000).values():
            got.extend(messages)
    return got


def test_poll_returns_what_is_there_without_waiting_for_a_full_batch(consumer: Any, topic: str) -> None:
    """Three messages, max_records 1000, a 20 s timeout: poll answers with the three, long before 20 s."""
    tp = TopicPartition(topic, 0)
    assert wait_until(lambda: consumer.poll(0.2, 1) or tp in consumer.assignment(), 60)
    consumer.seek(tp, 0)
    started = time.monotonic()
    found = consumer.poll(20.0, 1000)
    assert time.monotonic() - started < 15.0  # the timeout bounds the wait for the first message only
    messages = found[tp]
    assert [m.offset for m in messages] == [0, 1, 2]
    first = messages[0]
    assert (first.topic, first.partition, first.key, first.value) == (topic, 0, b"k", b'{"n":0}')
    assert list(first.headers) == [("id", b"0")] and isinstance(first.timestamp, int)
    assert ("assigned", {tp}) in consumer.events


def test_commit_pause_and_offsets(consumer: Any, topic: str) -> None:
    """Committed offsets read back; a paused partition delivers nothing until resumed; lag offsets known."""
    tp = TopicPartition(topic, 0)
    messages = _poll_until(consumer, 3)
    assert [m.offset for m in messages] == [0, 1, 2]
    consumer.commit({tp: (2, messages[1].leader_epoch)}, 10.0)
    assert consumer.committed(tp, 10.0) == 2
    assert wait_until(lambda: consumer.end_offsets([tp], 5.0).get(tp) == 3, 30)

    consumer.seek(tp, 2)
    consumer.pause([tp])
    assert consumer.paused() == {tp}
    assert consumer.poll(1.0, 1000) == {}
    consumer.resume([tp])
    assert consumer.paused() == set()
    assert [m.offset for m in _poll_until(consumer, 1)] == [2]
