"""The Kafka exporter's settings, and the kafka-python producer configuration built from them.

Validation happens here, at configure time, for everything kafka-python
would only refuse later (a codec whose library is missing, a delivery budget
shorter than one request, a bootstrap address that is not ``host:port``), with
errors that name the ``LOGPIPE_KAFKA_*`` variable to fix. How to *reach* the
cluster comes from `logpipe.kafkaclient`, the one place that builds Kafka
client configuration; what this producer *does* (acks, batching, timeouts) is
merged on top.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import kafka.codec

from ..config import at_least, setting
from ..exceptions import ConfigError
from ..kafkaclient import Connection, KafkaSecurity, kafka_python
from ..record import Record

__all__ = ["CODECS", "Compression", "KafkaOptions", "KeyChoice", "connection", "key_function", "producer_config"]

KeyChoice = Literal["none", "service", "trace_id"]
Compression = Literal["none", "gzip", "lz4", "zstd", "snappy"]

#: The variable the bootstrap servers come from, named in every error about them.
SERVERS_VARIABLE = "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS"

#: The library each codec needs, and kafka-python's check that it is importable.
CODECS: dict[str, tuple[str, Callable[[], bool]]] = {
    "gzip": ("gzip (standard library)", kafka.codec.has_gzip),
    "lz4": ("lz4", kafka.codec.has_lz4),
    "zstd": ("zstandard", kafka.codec.has_zstd),
    "snappy": ("python-snappy", kafka.codec.has_snappy),
}


@dataclass(frozen=True)
class KafkaOptions(KafkaSecurity):
    """``LOGPIPE_KAFKA_*``: the security group (`KafkaSecurity`, shared with ship) and the producer's own."""

    bootstrap_servers: str = setting("127.0.0.1:9092", "Comma list of host:port brokers to bootstrap from.")
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


def producer_config(o: KafkaOptions) -> dict[str, Any]:
    """kafka-python settings for *o*; raises ConfigError for what kafka-python would refuse later."""
    if o.compression != "none":
        library, available = CODECS[o.compression]
        if not available():
            raise ConfigError(
                f"LOGPIPE_KAFKA_COMPRESSION={o.compression}: the {library} library is not importable; "
                f"install it or choose another codec"
            )
    if o.delivery_timeout < o.linger + o.request_timeout:
        raise ConfigError(
            f"LOGPIPE_KAFKA_DELIVERY_TIMEOUT={o.delivery_timeout:g} must be at least "
            f"LOGPIPE_KAFKA_LINGER + LOGPIPE_KAFKA_REQUEST_TIMEOUT ({o.linger + o.request_timeout:g})"
        )
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


def _ms(seconds: float) -> int:
    """kafka-python takes whole milliseconds (its request encoder rejects floats)."""
    return int(round(seconds * 1000))


def key_function(choice: KeyChoice) -> Callable[[Record], bytes | None]:
    """The message key of a record for the ``key`` setting."""
    if choice == "service":
        return lambda r: r.service.encode() if r.service else None
    if choice == "trace_id":
        return lambda r: r.trace_id.encode() if r.trace_id else None
    return lambda r: None
