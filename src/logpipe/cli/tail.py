"""``logpipe tail``: follow log files into Kafka, at least once (see `logpipe.tail`)."""

from __future__ import annotations

import functools
import gc
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .. import metrics
from ..exceptions import ConfigError
from ..tail import Tailer, TailOptions, TailStats, load_options
from . import kafka_flags, progress

__all__ = ["tail"]

#: Where --metrics-address is also read from.
METRICS_ENV = "LOGPIPE_TAIL_METRICS_ADDRESS"

#: Setting -> the flag that sets it, so errors name what the user typed.
_FLAGS = {
    "paths": "PATH_OR_GLOB",
    "registry": "--registry",
    "start": "--start",
    "batch_size": "--batch-size",
    "max_line_bytes": "--max-line-bytes",
    "dead_letter": "--dead-letter",
    "service": "--service",
    "status_interval": "--status-interval",
    "status_file": "--status-file",
}

#: Kafka exporter setting -> the flag of this command that sets it.
_KAFKA_FLAGS = {"topic": "--topic", "bootstrap_servers": "--bootstrap-servers", **kafka_flags.FLAGS}


@click.command()
@click.argument("paths", nargs=-1, metavar="PATH_OR_GLOB...")
@click.option("--once", is_flag=True, help="Read every matching file to its end, ship, exit (0 when all delivered).")
@click.option(
    "--start",
    type=click.Choice(["beginning", "end"]),
    help="Where a file not in the registry starts (default beginning) [LOGPIPE_TAIL_START].",
)
@click.option("--registry", help="Registry file (default logs/tail-registry.json) [LOGPIPE_TAIL_REGISTRY].")
@click.option("--topic", "-t", help="Kafka topic (default LOGPIPE_KAFKA_TOPIC).")
@click.option("--bootstrap-servers", "-b", help="Kafka brokers, comma list (default LOGPIPE_KAFKA_BOOTSTRAP_SERVERS).")
@click.option("--batch-size", type=int, help="Lines per Kafka batch (default 2000) [LOGPIPE_TAIL_BATCH_SIZE].")
@click.option(
    "--max-line-bytes",
    type=int,
    help="Longer lines are split into wrapped pieces (default 512 KiB) [LOGPIPE_TAIL_MAX_LINE_BYTES].",
)
@click.option(
    "--dead-letter",
    help="Dead-letter file for records Kafka refuses (default logs/tail-dead-letter.jsonl) [LOGPIPE_TAIL_DEAD_LETTER].",
)
@click.option("--service", help="Service of wrapped (non-KafkaLog) lines [LOGPIPE_TAIL_SERVICE].")
@click.option("--status-interval", type=float, help="Seconds between progress updates [LOGPIPE_TAIL_STATUS_INTERVAL].")
@click.option(
    "--status-file", help="JSON status rewritten each interval, for `logpipe health` [LOGPIPE_TAIL_STATUS_FILE]."
)
@kafka_flags.security_options("LOGPIPE_KAFKA_")
@progress.metrics_option(METRICS_ENV)
@click.option("--quiet", "-q", is_flag=True, help="No progress display; errors and the summary still go to stderr.")
def tail(
    paths: tuple[str, ...],
    once: bool,
    topic: str | None,
    bootstrap_servers: str | None,
    quiet: bool,
    metrics_address: str | None,
    **flags: Any,
) -> None:
    """Send every line of the files matching PATH_OR_GLOB to Kafka, one message per line (Filebeat's role).

    KafkaLog lines (what logpipe's file exporter writes) go as they are; other
    programs' JSON lines (zap, ECS, ...) are mapped onto KafkaLog, any other
    line is wrapped into a KafkaLog record (LOGPIPE_TAIL_FORMATS,
    LOGPIPE_TAIL_MULTILINE: see docs/tail.md). Progress is kept in a
    registry file and advances only after Kafka acknowledged, so a restart
    resumes where it stopped. Quote globs ('logs/*.jsonl*') so new files that
    match are picked up. Stop with SIGTERM or Ctrl-C: batches in flight are
    finished and the registry written; a second signal exits at once (what
    was not acknowledged is read again next time).
    """
    kafka: dict[str, Any] = kafka_flags.take_security(flags)
    overrides = {name: value for name, value in flags.items() if value is not None}
    if paths:
        overrides["paths"] = paths
    if topic:
        kafka["topic"] = topic
    if bootstrap_servers:
        kafka["bootstrap_servers"] = bootstrap_servers
    try:
        options = load_options(overrides)
    except ConfigError as exc:
        raise click.UsageError(progress.with_flags(str(exc), _FLAGS)) from exc
    err = Console(stderr=True)
    display = progress.Display[TailStats](
        "logpipe tail",
        err,
        status_interval=options.status_interval,
        live=not quiet and err.is_terminal,
        lines=not quiet and not err.is_terminal,
        count=lambda stats: stats.sent,
        line=_line,
        render=functools.partial(_render, options),
    )
    try:
        report = progress.reporter(
            display, "tail", options.status_file, options.status_interval, "--status-file / LOGPIPE_TAIL_STATUS_FILE"
        )
        tailer = Tailer(options, once=once, exporter_overrides=kafka, progress=report)
    except ConfigError as exc:
        raise click.UsageError(progress.with_flags(str(exc), _KAFKA_FLAGS)) from exc
    server = progress.serve_metrics(metrics_address, METRICS_ENV, lambda: metrics.tail_registry(tailer, _spool_root()))
    progress.install_signals(
        tailer, "logpipe tail: second signal, exiting; unacknowledged lines are read again next time"
    )
    # Everything made so far (modules, settings, the producer) lives as long as the command: out of the
    # collector's way, so the full collections that the per-line records trigger do not walk it each time
    # (~0.2 us a line of the tailer's thread, see docs/tail.md "Where the time goes").
    gc.freeze()
    try:
        with display:
            stats = tailer.run()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if server is not None:
            server.close()
    err.print(_summary(stats, tailer.unacknowledged), highlight=False, soft_wrap=True)
    if tailer.unacknowledged:
        sys.exit(3)


def _spool_root() -> Path | None:
    """This machine's spool root (LOGPIPE_SPOOL_DIR), for the spool gauges; None when the setting is bad."""
    from .. import config
    from ..exporters.spool import SpoolOptions

    try:
        return Path(config.load(SpoolOptions, "LOGPIPE_SPOOL_").dir)
    except ConfigError:
        return None


def _summary(stats: TailStats, unacknowledged: int) -> str:
    seconds = time.monotonic() - stats.started
    text = (
        f"logpipe tail: stopped after {seconds:.1f}s: lines_read={stats.lines_read} sent={stats.sent} "
        f"wrapped={stats.wrapped} parsed={stats.parsed} joined={stats.joined} too_long={stats.too_long} "
        f"empty={stats.empty} "
        f"dead_lettered={stats.dead_lettered} retries={stats.retries} rotations={stats.rotations} "
        f"truncations={stats.truncations} unacknowledged={unacknowledged} rate={stats.rate:.0f} lines/s"
    )
    if stats.last_error:
        text += f"\nlast error: {stats.last_error}"
    return text


def _line(stats: TailStats, rate: float) -> str:
    """The status line written each interval when stderr is not a terminal (a log, a pipe)."""
    return (
        f"{stats.state} files_open={stats.files_open} lines_read={stats.lines_read} "
        f"sent={stats.sent} wrapped={stats.wrapped} too_long={stats.too_long} in_flight={stats.in_flight} "
        f"rate={rate:.0f}/s errors={stats.errors}"
    )


def _render(options: TailOptions, stats: TailStats, rate: float) -> Group:
    """The live table shown when stderr is a terminal."""
    head = Table.grid(padding=(0, 2))
    head.add_row("following", ", ".join(options.paths))
    head.add_row("state", stats.state)
    head.add_row(
        "files open", f"{stats.files_open:,}  rotations {stats.rotations:,}  truncations {stats.truncations:,}"
    )
    head.add_row("rate", f"{rate:,.0f} lines/s")
    head.add_row("lines read", f"{stats.lines_read:,}  ({stats.bytes_read / 1e6:,.1f} MB)")
    head.add_row(
        "sent",
        f"{stats.sent:,}  in flight {stats.in_flight:,}  wrapped {stats.wrapped:,}  parsed {stats.parsed:,}  "
        f"joined {stats.joined:,}  too long {stats.too_long:,}",
    )
    head.add_row("errors", f"{stats.errors:,}  retries {stats.retries:,}  dead-lettered {stats.dead_lettered:,}")
    parts: list[Any] = [head]
    if stats.last_error:
        parts.append(Text(f"last error: {stats.last_error}", style="yellow"))
    return Group(*parts)
