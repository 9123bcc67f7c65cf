"""logpipe._kafka_compat: every private kafka-python attribute logpipe relies on still exists."""

from __future__ import annotations

import importlib
import threading

import pytest
from kafka import KafkaProducer
from kafka.future import Future
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.structs import TopicPartition

from logpipe import _kafka_compat as compat


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def producer() -> KafkaProducer:
    """A producer that never reaches a broker (api_version given: no bootstrap in the constructor)."""
    made = KafkaProducer(bootstrap_servers=["127.0.0.1:1"], api_version=(2, 5))
    yield made
    compat.force_close(made)
    made.close(timeout=1)


class TestPrivateAttributes:
    @pytest.mark.parametrize(("owner", "attribute"), compat.PRIVATE)
    def test_attribute_exists(self, owner: str, attribute: str, producer: KafkaProducer) -> None:
        """Each private name is on the class (a method or slot) or on a live instance."""
        cls = _class(owner)
        instances = {KafkaProducer: producer, type(producer._sender): producer._sender}
        where = instances.get(cls, cls)
        assert hasattr(where, attribute) or attribute in getattr(cls, "__slots__", ()), f"{owner}.{attribute} is gone"


class TestFunctions:
    def test_await_record_waits_on_the_batch_latch(self) -> None:
        """await_record returns as soon as the record's producer batch resolves."""
        batch = FutureProduceResult(TopicPartition("t", 0))
        record = FutureRecordMetadata(batch, 0, 0, None, 0, 0, 0)
        threading.Timer(0.05, lambda: batch.success((0, 0, None))).start()
        compat.await_record(record, 10.0)
        assert batch.is_done

    def test_await_record_falls_back_to_a_callback(self) -> None:
        """A future without the private latch is awaited through a public callback."""
        plain = Future()
        threading.Timer(0.05, lambda: plain.success(1)).start()
        compat.await_record(plain, 10.0)
        assert plain.is_done

    def test_unregister_atexit_and_force_close_accept_other_objects(self) -> None:
        """Objects without the private names (another version, a fake) are left alone."""
        compat.unregister_atexit(object())
        compat.force_close(object())

    def test_force_close_fails_unsent_records(self, producer: KafkaProducer) -> None:
        """force_close ends the producer's sender thread without waiting for a broker."""
        fresh = KafkaProducer(bootstrap_servers=["127.0.0.1:1"], api_version=(2, 5))
        compat.unregister_atexit(fresh)
        compat.force_close(fresh)
        fresh.close(timeout=1)
