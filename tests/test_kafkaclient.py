"""Tests for logpipe.kafkaclient: one place for Kafka client configuration."""

from __future__ import annotations

import pytest

from logpipe import ConfigError
from logpipe.kafkaclient import Connection, kafka_python, librdkafka


def test_servers_from_a_comma_list() -> None:
    c = Connection.of(" a:9092, [::1]:9093,", "me", variable="LOGPIPE_X")
    assert c.bootstrap_servers == ("a:9092", "[::1]:9093")
    assert c.addresses() == [("a", 9092), ("::1", 9093)]


@pytest.mark.parametrize("value", ["", "a", "a:b", "a:0", "a:70000"])
def test_bad_servers_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="LOGPIPE_SHIP_BOOTSTRAP_SERVERS"):
        Connection.of(value, variable="LOGPIPE_SHIP_BOOTSTRAP_SERVERS")


def test_both_libraries_get_the_same_connection() -> None:
    c = Connection(("a:1", "b:2"), "cid")
    assert kafka_python(c, acks="all") == {"bootstrap_servers": ["a:1", "b:2"], "client_id": "cid", "acks": "all"}
    assert librdkafka(c, **{"acks": "all"}) == {"bootstrap.servers": "a:1,b:2", "client.id": "cid", "acks": "all"}
