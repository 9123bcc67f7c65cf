"""``logpipe ship``: the long-running Kafka -> Elasticsearch shipper (see `logpipe.ship`)."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .. import config, metrics
from ..exceptions import ConfigError
from ..exporters.spool import SpoolOptions
from ..kafkaerrors import failure_message
from ..ship import CLIENTS, ShipOptions, Shipper, ShipStats, load_options
from ..ship.options import kafka_connection
from . import kafka_flags, progress

#: Where --metrics-address is also read from.
METRICS_ENV = "LOGPIPE_SHIP_METRICS_ADDRESS"

#: Setting -> the flag that sets it, so errors name what the user typed.
_FLAGS = {
    "bootstrap_servers": "--bootstrap-servers",
    "topics": "--topic",
    "pattern": "--pattern",
    "group_id": "--group",
    "instance_id": "--instance-id",
    "session_timeout": "--session-timeout",
    "auto_offset_reset": "--auto-offset-reset",
    "es_hosts": "--es-hosts",
    "index_prefix": "--index-prefix",
    "batch_size": "--batch-size",
    "batch_max_wait": "--batch-max-wait",
    "concurrency": "--concurrency",
    "max_message_bytes": "--max-message-bytes",
    "fetch_max_bytes": "--fetch-max-bytes",
    "dead_letter": "--dead-letter",
    "shutdown_timeout": "--shutdown-timeout",
    "status_interval": "--status-interval",
    "status_file": "--status-file",
    "kafka_client": "--kafka-client",
    **kafka_flags.FLAGS,
}


@click.command()
@click.option("--bootstrap-servers", "-b", help="Kafka bootstrap servers, comma list [LOGPIPE_SHIP_BOOTSTRAP_SERVERS].")
@click.option("--topic", "-t", "topics", multiple=True, help="Topic to consume; repeatable [LOGPIPE_SHIP_TOPICS].")
@click.option("--pattern", help="Regular expression of topics, instead of --topic [LOGPIPE_SHIP_PATTERN].")
@click.option("--group", "-g", "group_id", help="Consumer group (default logpipe-shipper) [LOGPIPE_SHIP_GROUP_ID].")
@click.option("--instance-id", help="Static group membership id, unique per shipper [LOGPIPE_SHIP_INSTANCE_ID].")
@click.option(
    "--session-timeout",
    type=float,
    help="Seconds before a dead shipper's partitions move (default 45) [LOGPIPE_SHIP_SESSION_TIMEOUT].",
)
@click.option(
    "--auto-offset-reset",
    type=click.Choice(["earliest", "latest"]),
    help="Start of a new group (default earliest) [LOGPIPE_SHIP_AUTO_OFFSET_RESET].",
)
@click.option(
    "--es-hosts", help="Elasticsearch URLs, comma list [LOGPIPE_SHIP_ES_HOSTS, else LOGPIPE_ELASTICSEARCH_HOSTS]."
)
@click.option(
    "--index-prefix",
    help="Daily indices <prefix>-YYYY.MM.dd [LOGPIPE_SHIP_INDEX_PREFIX, else LOGPIPE_ELASTICSEARCH_INDEX_PREFIX].",
)
@click.option("--batch-size", type=int, help="Messages per bulk + commit (default 2000) [LOGPIPE_SHIP_BATCH_SIZE].")
@click.option("--concurrency", type=int, help="Bulk requests in flight at once (default 4) [LOGPIPE_SHIP_CONCURRENCY].")
@click.option(
    "--batch-max-wait",
    type=float,
    help="Seconds a batch may wait to fill while others index (default 1.0) [LOGPIPE_SHIP_BATCH_MAX_WAIT].",
)
@click.option(
    "--max-message-bytes",
    type=int,
    help="Larger messages are dead-lettered (default 1 MiB) [LOGPIPE_SHIP_MAX_MESSAGE_BYTES].",
)
@click.option(
    "--fetch-max-bytes",
    type=int,
    help="Most bytes one Kafka fetch brings (default 16 MiB) [LOGPIPE_SHIP_FETCH_MAX_BYTES].",
)
@click.option("--dead-letter", help="Topic template ({topic}.dlq by default) or file:PATH [LOGPIPE_SHIP_DEAD_LETTER].")
@click.option(
    "--shutdown-timeout",
    type=float,
    help="Seconds a stop waits for the batch in flight (default 30) [LOGPIPE_SHIP_SHUTDOWN_TIMEOUT].",
)
@click.option("--status-interval", type=float, help="Seconds between progress updates [LOGPIPE_SHIP_STATUS_INTERVAL].")
@click.option(
    "--status-file", help="JSON status rewritten each interval, for `logpipe health` [LOGPIPE_SHIP_STATUS_FILE]."
)
@click.option(
    "--kafka-client",
    type=click.Choice(["auto", *CLIENTS]),
    help="Client library that consumes (default auto: confluent-kafka when installed) [LOGPIPE_SHIP_KAFKA_CLIENT].",
)
@kafka_flags.security_options("LOGPIPE_SHIP_")
@progress.metrics_option(METRICS_ENV)
@click.option("--quiet", "-q", is_flag=True, help="No progress display; errors and the summary still go to stderr.")
def ship(quiet: bool, metrics_address: str | None, **flags: Any) -> None:
    """Ship KafkaLog records from Kafka topics into Elasticsearch, at least once and without duplicates.

    Offsets are committed only after Elasticsearch (or the dead-letter
    destination) has every message of a batch. Stop with SIGTERM or Ctrl-C:
    the batch in flight is finished and committed; a second signal exits at
    once (nothing is lost, the uncommitted batch is shipped again).
    """
    overrides = {name: value for name, value in flags.items() if value not in (None, ())}
    try:
        options, es_options = load_options(overrides)
    except ConfigError as exc:
        raise click.UsageError(progress.with_flags(str(exc), _FLAGS)) from exc
    err = Console(stderr=True)
    display = progress.Display[ShipStats](
        "logpipe ship",
        err,
        status_interval=options.status_interval,
        live=not quiet and err.is_terminal,
        lines=not quiet and not err.is_terminal,
        count=_done,
        line=_line,
        render=functools.partial(_render, options),
    )
    try:
        report = progress.reporter(
            display, "ship", options.status_file, options.status_interval, "--status-file / LOGPIPE_SHIP_STATUS_FILE"
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    shipper = Shipper(options, es_options, progress=report, track_lag=not quiet or bool(metrics_address))
    server = progress.serve_metrics(metrics_address, METRICS_ENV, lambda: metrics.ship_registry(shipper, _spool_root()))
    progress.install_signals(shipper, "logpipe ship: second signal, exiting without committing the batch in flight")
    try:
        with display:
            stats = shipper.run()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    except _kafka_errors() as exc:
        servers = ",".join(options.bootstrap_servers)
        raise click.ClickException(
            f"Kafka at {servers} (--bootstrap-servers / LOGPIPE_SHIP_BOOTSTRAP_SERVERS): {_why(exc, options)}"
        ) from exc
    finally:
        if server is not None:
            server.close()
    err.print(_summary(stats, shipper.rate, shipper.kafka_client), highlight=False, soft_wrap=True)
    if stats.in_flight:
        sys.exit(3)


def _spool_root() -> Path | None:
    """This machine's spool root (LOGPIPE_SPOOL_DIR), for the spool gauges; None when the setting is bad."""
    try:
        return Path(config.load(SpoolOptions, "LOGPIPE_SPOOL_").dir)
    except ConfigError:
        return None


def _why(exc: BaseException, options: ShipOptions) -> str:
    """The Kafka failure in words; with TLS or SASL, the setting to fix (never a secret)."""
    connection = kafka_connection(options, "logpipe-shipper")
    if not (connection.security.tls or connection.security.sasl):
        return str(exc)
    return failure_message(exc, connection)


def _kafka_errors() -> tuple[type[BaseException], ...]:
    """The exception types of the installed Kafka client libraries."""
    found: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from kafka.errors import KafkaError

        found.append(KafkaError)
    with contextlib.suppress(ImportError):
        from confluent_kafka import KafkaException

        found.append(KafkaException)
    return tuple(found)


def _summary(stats: ShipStats, rate: float, client: str) -> str:
    seconds = time.monotonic() - stats.started
    text = (
        f"logpipe ship: stopped after {seconds:.1f}s: consumed={stats.consumed} indexed={stats.indexed} "
        f"duplicates={stats.duplicates} dead_lettered={stats.dead_lettered} (refused_by_es={stats.rejected}) "
        f"retries={stats.retries} commits={stats.commits} commit_errors={stats.commit_errors} "
        f"in_flight={stats.in_flight} rate={rate:.0f} msg/s (first to last message) client={client}"
    )
    if stats.last_error:
        text += f"\nlast error: {stats.last_error}"
    return text


def _done(stats: ShipStats) -> int:
    """Messages accounted for (indexed, already indexed, dead-lettered): what the displayed rate counts."""
    return stats.indexed + stats.duplicates + stats.dead_lettered


def _line(stats: ShipStats, rate: float) -> str:
    """The status line written each interval when stderr is not a terminal (a log, a pipe)."""
    lag = sum(stats.lag.values())
    return (
        f"{stats.state} indexed={stats.indexed} duplicates={stats.duplicates} "
        f"dead_lettered={stats.dead_lettered} rate={rate:.0f}/s lag={lag} errors={stats.errors}"
    )


def _render(o: ShipOptions, stats: ShipStats, rate: float) -> Group:
    """The live table shown when stderr is a terminal."""
    source = ",".join(o.topics) if o.topics else f"/{o.pattern}/"
    head = Table.grid(padding=(0, 2))
    head.add_row("source", f"{source} (group {o.group_id}, {stats.assigned} partition(s))")
    head.add_row("state", stats.state)
    head.add_row("rate", f"{rate:,.0f} docs/s")
    head.add_row(
        "indexed", f"{stats.indexed:,}  duplicates {stats.duplicates:,}  dead-lettered {stats.dead_lettered:,}"
    )
    head.add_row("errors", f"{stats.errors:,}  retries {stats.retries:,}  commits {stats.commits:,}")
    lag = Table(title="lag = end offset - committed", title_justify="left")
    lag.add_column("partition")
    lag.add_column("lag", justify="right")
    for name, value in sorted(stats.lag.items()):
        lag.add_row(name, f"{value:,}")
    parts: list[Any] = [head, lag]
    if stats.last_error:
        parts.append(Text(f"last error: {stats.last_error}", style="yellow"))
    return Group(*parts)
