"""Settings of ``logpipe ship``: `ShipOptions` (``LOGPIPE_SHIP_*``), and `load_options` for them and Elasticsearch's.

How to reach Elasticsearch (auth, TLS, template, analyzer, retries) comes
from ``LOGPIPE_ELASTICSEARCH_*``, shared with the direct exporter; the
shipper's own settings may override its hosts and index prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import config
from .. import elasticsearch as es
from ..config import at_least, regex, setting
from ..elasticsearch.options import _check_hosts, _check_prefix
from ..exceptions import ConfigError
from ..kafkaclient import Connection, KafkaSecurity
from .consumer import KafkaClient, resolve_client

__all__ = ["ENV_PREFIX", "ShipOptions", "load_options"]

ENV_PREFIX = "LOGPIPE_SHIP_"

_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _optional_prefix(value: str | None) -> str | None:
    return None if value is None else _check_prefix(value)


def _optional_hosts(value: tuple[str, ...]) -> str | None:
    return _check_hosts(value) if value else None


@dataclass(frozen=True)
class ShipOptions(KafkaSecurity):
    """Settings of ``logpipe ship`` (``LOGPIPE_SHIP_*``); Kafka security is `KafkaSecurity`, as for the exporter.

    How to reach Elasticsearch otherwise (auth, TLS, template, analyzer,
    retries) comes from ``LOGPIPE_ELASTICSEARCH_*``, shared with the direct exporter.
    """

    bootstrap_servers: tuple[str, ...] = setting(("127.0.0.1:9092",), "Kafka bootstrap servers, comma list.")
    topics: tuple[str, ...] = setting((), "Topics to consume, comma list (or use PATTERN).")
    pattern: str | None = setting(None, "Regular expression of topics to consume, instead of TOPICS.")
    group_id: str = setting("logpipe-shipper", "Consumer group; shippers in one group share partitions.")
    instance_id: str | None = setting(
        None,
        "Static group membership id (unique per shipper): a restarted shipper gets its partitions "
        "back without a rebalance.",
    )
    session_timeout: float = setting(
        45.0,
        "Seconds without a heartbeat before a dead shipper's partitions move to the others.",
        check=at_least(1),
    )
    auto_offset_reset: Literal["earliest", "latest"] = setting(
        "earliest", "Where a group without committed offsets starts: earliest or latest."
    )
    es_hosts: tuple[str, ...] = setting(
        (), "Elasticsearch URLs, comma list (default: LOGPIPE_ELASTICSEARCH_HOSTS).", check=_optional_hosts
    )
    index_prefix: str | None = setting(
        None, "Index prefix (default: LOGPIPE_ELASTICSEARCH_INDEX_PREFIX).", check=_optional_prefix
    )
    batch_size: int = setting(2000, "Most messages shipped (and committed) together.", check=at_least(1))
    concurrency: int = setting(
        4,
        "Bulk requests in flight at once, across batch boundaries (like parallel_bulk's 4 threads).",
        check=at_least(1),
    )
    batch_max_wait: float = setting(
        1.0,
        "Seconds the first message of a batch waits for the batch to fill while other batches are being "
        "indexed (with none in flight a partial batch goes as soon as a poll finds nothing more).",
        check=at_least(0),
    )
    max_message_bytes: int = setting(
        1024 * 1024, "Larger messages go to the dead-letter destination.", check=at_least(1)
    )
    fetch_max_bytes: int = setting(
        16 * 1024 * 1024,
        "Most bytes one Kafka fetch brings (at least MAX_MESSAGE_BYTES); larger fetches keep "
        "Elasticsearch busy with fewer round trips, at the cost of memory.",
        check=at_least(64 * 1024),
    )
    dead_letter: str = setting(
        "{topic}.dlq", "Dead-letter Kafka topic ({topic} = the source topic) or file:PATH for JSON Lines."
    )
    shutdown_timeout: float = setting(
        30.0,
        "Seconds a stop request waits for the batches in flight (e.g. while Elasticsearch is down).",
        check=at_least(0),
    )
    status_interval: float = setting(2.0, "Seconds between progress updates.", check=at_least(0.1))
    status_file: Path | None = setting(
        None,
        "JSON file rewritten every STATUS_INTERVAL with the state and counters, for health checks "
        "(logpipe health reads it; the container image sets it).",
    )
    redact: bool = setting(
        True,
        "Mask secrets in what the shipper maps or wraps (other producers' messages), by LOGPIPE_REDACT's rules; "
        "logpipe's own records were masked where they were made.",
    )
    redact_keys: tuple[str, ...] = setting((), "More key names whose values are masked (case-insensitive).")
    redact_pattern: str | None = setting(
        None, "A regular expression whose matches in any text are masked too.", check=regex
    )
    default_timezone: str = setting(
        "UTC",
        "Zone of a Time without a UTC offset in a message (the seed design's Go services write "
        "'2006-01-02 15:04:05' in their local time: set their zone, e.g. Asia/Shanghai); 'local' is this machine's.",
        check=lambda value: _zone_problem(value),
    )
    kafka_client: KafkaClient = setting(
        "auto",
        "Kafka client library that consumes: confluent-kafka (librdkafka, about a third of kafka-python's "
        "CPU per message; pip install 'logpipe-kafkalog[ship]') or kafka-python; auto takes confluent-kafka when "
        "it is installed.",
    )


def load_options(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[ShipOptions, es.ElasticsearchOptions]:
    """Read ``LOGPIPE_SHIP_*`` and ``LOGPIPE_ELASTICSEARCH_*`` (arguments win); validate both."""
    ship = config.load(ShipOptions, ENV_PREFIX, overrides, environ)
    if bool(ship.topics) == bool(ship.pattern):
        raise ConfigError(f"set exactly one of {ENV_PREFIX}TOPICS (--topic) and {ENV_PREFIX}PATTERN (--pattern)")
    if ship.pattern:
        try:
            re.compile(ship.pattern)
        except re.error as exc:
            raise ConfigError(f"{ENV_PREFIX}PATTERN={ship.pattern!r}: not a regular expression ({exc})") from None
    _check_dead_letter(ship.dead_letter)
    kafka_connection(ship, "logpipe-shipper")  # bad servers or security settings fail here, naming the variable
    resolve_client(ship.kafka_client, f"{ENV_PREFIX}KAFKA_CLIENT", pattern=ship.pattern)
    es_overrides: dict[str, Any] = {}
    if ship.es_hosts:
        es_overrides["hosts"] = ship.es_hosts
    if ship.index_prefix:
        es_overrides["index_prefix"] = ship.index_prefix
    es_options = config.load(es.ElasticsearchOptions, es.ENV_PREFIX, es_overrides, environ)
    es.check_options(es_options)
    return ship, es_options


def zone(name: str) -> tzinfo | None:
    """The tzinfo of a ``DEFAULT_TIMEZONE`` value (None: the machine's local zone); raises ValueError."""
    if name.strip().lower() == "local":
        return None
    if name.strip().upper() in ("UTC", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone ({exc})") from None


def _zone_problem(name: str) -> str | None:
    try:
        zone(name)
    except ValueError as exc:
        return f"{exc}; use an IANA name such as Europe/Berlin, UTC or local"
    return None


def _check_dead_letter(value: str) -> None:
    var = f"{ENV_PREFIX}DEAD_LETTER"
    if value.startswith("file:"):
        if not value[5:]:
            raise ConfigError(f"{var}={value!r}: file: needs a path, e.g. file:logs/ship-dead-letter.jsonl")
        return
    try:
        sample = value.format(topic="logs")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{var}={value!r}: only {{topic}} may be substituted ({exc})") from None
    if not _TOPIC_CHARS.match(sample):
        raise ConfigError(f"{var}={value!r}: not a Kafka topic name (letters, digits, . _ -) nor file:PATH")


def kafka_connection(options: ShipOptions, client_id: str) -> Connection:
    """How the shipper's clients (consumer, dead-letter producer) reach Kafka: servers and security."""
    return Connection.of(
        options.bootstrap_servers, client_id, variable=f"{ENV_PREFIX}BOOTSTRAP_SERVERS", security=options
    )
