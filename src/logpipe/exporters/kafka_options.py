"""The Kafka exporter's settings, and the producer configuration of either client library built from them.

Validation happens here, at configure time, for everything a client would
only refuse later (a client library or codec that is not installed, a
delivery budget shorter than one request, a bootstrap address that is not
``host:port``), with errors that name the ``LOGPIPE_KAFKA_*`` variable to
fix. How to *reach* the cluster comes from `logpipe.kafkaclient`, the one
place that builds Kafka client configuration; what this producer *does*
(acks, batching, timeouts) is merged on top, in kafka-python's words
(`producer_config`) or librdkafka's (`librdkafka_config`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..config import at_least, setting
from ..exceptions import ConfigError
from ..kafkaclient import Connection, KafkaClient, KafkaSecurity, choose_client, kafka_python, librdkafka
from ..record import Record

__all__ = [
    "CODECS",
    "Compression",
    "KafkaOptions",
    "KeyChoice",
    "client_library",
    "connection",
    "headers",
    "key_function",
    "librdkafka_config",
    "no_key",
    "producer_config",
]

KeyChoice = Literal["none", "service", "trace_id"]
Compression = Literal["none", "gzip", "lz4", "zstd", "snappy"]

#: The variable the bootstrap servers come from, named in every error about them.
SERVERS_VARIABLE = "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS"

#: The variable the client library comes from.
CLIENT_VARIABLE = "LOGPIPE_KAFKA_CLIENT"

#: The extra of logpipe's distribution that installs each client library.
CLIENT_EXTRAS = {"kafka-python": "kafka", "confluent-kafka": "confluent"}


def _has(codec: str) -> Callable[[], bool]:
    def check() -> bool:
        import kafka.codec

        return bool(getattr(kafka.codec, f"has_{codec}")())

    return check


#: The library each codec needs with kafka-python, and kafka-python's check that it is importable
#: (librdkafka has every codec built in).
CODECS: dict[str, tuple[str, Callable[[], bool]]] = {
    "gzip": ("gzip (standard library)", _has("gzip")),
    "lz4": ("lz4", _has("lz4")),
    "zstd": ("zstandard", _has("zstd")),
    "snappy": ("python-snappy", _has("snappy")),
}


@dataclass(frozen=True)
class KafkaOptions(KafkaSecurity):
    """``LOGPIPE_KAFKA_*``: the security group (`KafkaSecurity`, shared with ship) and the producer's own."""

    bootstrap_servers: str = setting("127.0.0.1:9092", "Comma list of host:port brokers to bootstrap from.")
    client: KafkaClient = setting(
        "auto",
        "Client library: confluent-kafka (librdkafka, C threads: runs in the application's process), "
        "kafka-python (pure Python: a child process under LOGPIPE_ISOLATION=auto), or auto "
        "(confluent-kafka when installed).",
    )
    topic: str = setting("logpipe", "Topic every record is sent to (the seed design uses msproject_log).")
    key: KeyChoice = setting(
        "none", "Message key: none (spread over partitions), service or trace_id (per-trace order)."
    )
    acks: Literal["all", "1", "0"] = setting(
        "all", "Acknowledgement: all (idempotent, survives a leader change), 1 (leader only) or 0 (none)."
    )
    compression: Compression = setting("none", "Batch compression: none, gzip, lz4, zstd or snappy.")
    linger: float = setting(0.005, "Seconds the producer waits to fill a batch.", check=at_least(0))
    batch_bytes: int = setting(262144, "Most bytes in one producer batch (per partition).", check=at_least(1))
    max_request_bytes: int = setting(
        1048576, "Largest produce request; a bigger single record cannot be sent.", check=at_least(1)
    )
    retries: int = setting(
        2147483647, "Retries of a failed produce request (bounded in time by delivery_timeout).", check=at_least(0)
    )
    retry_backoff: float = setting(0.1, "Seconds between retries.", check=at_least(0))
    delivery_timeout: float = setting(
        10.0, "Seconds one batch may take, retries included, before its records are spooled.", check=at_least(0.001)
    )
    request_timeout: float = setting(
        5.0, "Seconds to wait for one broker response (and for topic metadata on send).", check=at_least(0.001)
    )
    connect_timeout: float = setting(
        2.0, "Seconds to connect and bootstrap before the broker counts as unreachable.", check=at_least(0.001)
    )
    down_backoff: float = setting(
        1.0,
        "Seconds export fails at once (records go to the spool) after the broker was unreachable.",
        check=at_least(0),
    )
    client_id: str = setting("logpipe", "Client id the broker sees (quotas, request logs).")
    in_flight_batches: int = setting(
        3,
        "Dispatcher batches handed to the producer before the oldest one's acknowledgements are awaited; "
        "1 is stop-and-wait.",
        check=at_least(1),
    )


def connection(o: KafkaOptions) -> Connection:
    """How to reach the cluster of *o*; `ConfigError` naming LOGPIPE_KAFKA_BOOTSTRAP_SERVERS when malformed."""
    return Connection.of(o.bootstrap_servers, o.client_id, variable=SERVERS_VARIABLE, security=o)


def client_library(o: KafkaOptions) -> str:
    """``kafka-python`` or ``confluent-kafka`` for ``o.client``; `ConfigError` naming LOGPIPE_KAFKA_CLIENT
    (and the extra to install) when the one asked for is not installed."""
    return choose_client(o.client, CLIENT_VARIABLE, extras=CLIENT_EXTRAS)


def _check_budget(o: KafkaOptions) -> None:
    if o.delivery_timeout < o.linger + o.request_timeout:
        raise ConfigError(
            f"LOGPIPE_KAFKA_DELIVERY_TIMEOUT={o.delivery_timeout:g} must be at least "
            f"LOGPIPE_KAFKA_LINGER + LOGPIPE_KAFKA_REQUEST_TIMEOUT ({o.linger + o.request_timeout:g})"
        )


def producer_config(o: KafkaOptions) -> dict[str, Any]:
    """kafka-python settings for *o*; raises ConfigError for what kafka-python would refuse later."""
    if o.compression != "none":
        library, available = CODECS[o.compression]
        if not available():
            raise ConfigError(
                f"LOGPIPE_KAFKA_COMPRESSION={o.compression}: the {library} library is not importable; "
                f"install it or choose another codec"
            )
    _check_budget(o)
    idempotent = o.acks == "all" and o.retries > 0
    return kafka_python(
        connection(o),
        acks="all" if o.acks == "all" else int(o.acks),
        enable_idempotence=idempotent,
        compression_type=None if o.compression == "none" else o.compression,
        linger_ms=_ms(o.linger),
        batch_size=o.batch_bytes,
        max_request_size=o.max_request_bytes,
        retries=o.retries,
        retry_backoff_ms=_ms(o.retry_backoff),
        delivery_timeout_ms=_ms(o.delivery_timeout),
        request_timeout_ms=_ms(o.request_timeout),
        max_block_ms=_ms(o.request_timeout),
        bootstrap_timeout_ms=_ms(o.connect_timeout),
        reconnect_backoff_max_ms=1000,
    )


def librdkafka_config(o: KafkaOptions) -> dict[str, Any]:
    """confluent-kafka (librdkafka) settings for *o*, the same producer as `producer_config` describes.

    librdkafka fails a record ``message.timeout.ms`` after it was produced:
    that is ``delivery_timeout``, the budget `KafkaExporter` waits for.
    """
    _check_budget(o)
    retry_backoff = max(1, _ms(o.retry_backoff))
    return librdkafka(
        connection(o),
        **{
            "acks": o.acks,
            "enable.idempotence": o.acks == "all" and o.retries > 0,
            "compression.type": o.compression,
            "linger.ms": o.linger * 1000,
            "batch.size": o.batch_bytes,
            "message.max.bytes": max(1000, o.max_request_bytes),  # librdkafka's lower bound
            "message.send.max.retries": o.retries,
            "retry.backoff.ms": retry_backoff,
            "retry.backoff.max.ms": max(1000, retry_backoff),
            "message.timeout.ms": _ms(o.delivery_timeout),
            "request.timeout.ms": _ms(o.request_timeout),
            "socket.connection.setup.timeout.ms": max(1000, _ms(o.connect_timeout)),
            "reconnect.backoff.max.ms": 1000,
        },
    )


def headers(record: Record) -> list[tuple[str, bytes]]:
    """The message headers of *record*: ``trace_id`` (when there is one), then ``id``."""
    if record.trace_id:
        return [("trace_id", record.trace_id.encode()), ("id", record.id.encode())]
    return [("id", record.id.encode())]


def _ms(seconds: float) -> int:
    """kafka-python takes whole milliseconds (its request encoder rejects floats)."""
    return int(round(seconds * 1000))


def key_function(choice: KeyChoice) -> Callable[[Record], bytes | None]:
    """The message key of a record for the ``key`` setting."""
    if choice == "service":
        return lambda r: r.service.encode() if r.service else None
    if choice == "trace_id":
        return lambda r: r.trace_id.encode() if r.trace_id else None
    return no_key


def no_key(record: Record) -> None:
    """The key function of ``key=none``: no key (a producer may test for it and skip the call)."""
    return None
