"""The one place that turns settings into Kafka client configuration, for both client libraries.

logpipe talks to Kafka from several places: the Kafka exporter (in the
application or its child process), spool replay through it, ``logpipe
tail``, ``logpipe ship``'s consumer (kafka-python or confluent-kafka) and its
dead-letter producer. How to *reach* the cluster (bootstrap servers, client
id, and the security settings that come with them) is the same for all of
them, and is built here only: `kafka_python` gives keyword arguments for
kafka-python's ``KafkaProducer``/``KafkaConsumer``, `librdkafka` a
configuration dict for confluent-kafka. What each client *does* (acks,
linger, group, fetch sizes) stays with its user and is merged on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigError

__all__ = ["Connection", "kafka_python", "librdkafka", "parse_servers"]


@dataclass(frozen=True)
class Connection:
    """How to reach one Kafka cluster.

    *variable* names the setting the servers came from (e.g.
    ``LOGPIPE_KAFKA_BOOTSTRAP_SERVERS``), so an error can say what to fix.
    """

    bootstrap_servers: tuple[str, ...]
    client_id: str = "logpipe"
    variable: str = "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS"

    @classmethod
    def of(cls, servers: str | Sequence[str], client_id: str = "logpipe", *, variable: str) -> Connection:
        """A connection from a comma list or a sequence of ``host:port``; raises `ConfigError` naming *variable*."""
        return cls(parse_servers(servers, variable), client_id, variable)

    def addresses(self) -> list[tuple[str, int]]:
        """``[(host, port), ...]`` of the bootstrap servers (IPv6 brackets removed)."""
        result = []
        for item in self.bootstrap_servers:
            host, _, port = item.rpartition(":")
            result.append((host.strip("[]") or "localhost", int(port)))
        return result


def parse_servers(servers: str | Sequence[str], variable: str) -> tuple[str, ...]:
    """``"a:9092, [::1]:9093"`` -> ``("a:9092", "[::1]:9093")``; else `ConfigError` naming *variable*."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    result = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{variable}: {item!r} is not host:port")
        result.append(f"{host}:{port}" if host else f"localhost:{port}")
    if not result:
        raise ConfigError(f"{variable}={servers!r}: expected host:port[,host:port]")
    return tuple(result)


def kafka_python(connection: Connection, **client: Any) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``KafkaProducer``/``KafkaConsumer``: *client* merged over the connection."""
    return {
        "bootstrap_servers": list(connection.bootstrap_servers),
        "client_id": connection.client_id,
        **client,
    }


def librdkafka(connection: Connection, **client: Any) -> dict[str, Any]:
    """A confluent-kafka configuration dict: *client* (librdkafka property names) merged over the connection."""
    return {
        "bootstrap.servers": ",".join(connection.bootstrap_servers),
        "client.id": connection.client_id,
        **client,
    }
