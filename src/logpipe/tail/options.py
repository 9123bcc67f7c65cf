"""Settings of ``logpipe tail`` (``LOGPIPE_TAIL_*``), read once and checked with errors naming the variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import config
from ..config import at_least, setting
from ..exceptions import ConfigError

__all__ = ["ENV_PREFIX", "TailOptions", "load_options"]

ENV_PREFIX = "LOGPIPE_TAIL_"


@dataclass(frozen=True)
class TailOptions:
    """Settings of ``logpipe tail`` (``LOGPIPE_TAIL_*``); Kafka itself is configured by ``LOGPIPE_KAFKA_*``."""

    paths: tuple[str, ...] = setting((), "Files or glob patterns to follow, comma list (the command's arguments).")
    registry: Path = setting(
        Path("logs") / "tail-registry.json", "Registry file: the acknowledged offset of every file followed."
    )
    start: Literal["beginning", "end"] = setting(
        "beginning",
        "Where a file that is not in the registry starts when the tailer starts: beginning or end "
        "(files appearing later always start at the beginning).",
    )
    batch_size: int = setting(2000, "Most lines handed to Kafka in one batch.", check=at_least(1))
    batch_bytes: int = setting(4 * 1024 * 1024, "Most bytes of lines in one batch.", check=at_least(1))
    max_line_bytes: int = setting(
        512 * 1024,
        "Longer lines are split into pieces of this many bytes, each sent as a wrapped record (counted too_long).",
        check=at_least(16),
    )
    scan_interval: float = setting(
        1.0, "Seconds between scans of the patterns for new, rotated and removed files.", check=at_least(0.01)
    )
    poll_interval: float = setting(
        0.1, "Seconds to wait for new data when every file is at its end.", check=at_least(0.001)
    )
    close_rotated: float = setting(
        5.0,
        "Seconds a file renamed or removed away from its pattern stays open after its last new byte; "
        "then an incomplete last line is sent and the file closed.",
        check=at_least(0),
    )
    close_inactive: float = setting(
        300.0,
        "Seconds a file without new data stays open (it is reopened when it grows).",
        check=at_least(0),
    )
    registry_flush: float = setting(
        1.0,
        "Seconds between registry writes (acknowledged progress is also written at exit); "
        "a crash resends at most what was acknowledged in this window.",
        check=at_least(0),
    )
    backoff: float = setting(0.5, "Seconds before records Kafka did not take are sent again.", check=at_least(0.01))
    max_backoff: float = setting(10.0, "Longest wait between retries (the backoff doubles).", check=at_least(0.01))
    max_attempts: int = setting(
        5,
        "A record refused this many times while the broker is up (too large, invalid) goes to the dead-letter "
        "file instead of being retried forever.",
        check=at_least(1),
    )
    dead_letter: Path = setting(
        Path("logs") / "tail-dead-letter.jsonl",
        "JSON Lines file of records Kafka refused, in logpipe's dead-letter format (the payload, the reason, "
        "the file path and line offset it came from).",
    )
    service: str = setting("", "Service of wrapped lines (lines that are not KafkaLog records).")
    shutdown_timeout: float = setting(
        30.0, "Seconds a stop waits for batches in flight (e.g. while Kafka is down).", check=at_least(0)
    )
    status_interval: float = setting(2.0, "Seconds between progress updates.", check=at_least(0.1))
    status_file: Path | None = setting(
        None,
        "JSON file rewritten every STATUS_INTERVAL with the state and counters, for health checks "
        "(logpipe health reads it; the container image sets it).",
    )
    isolation: Literal["auto", "thread", "process"] = setting(
        "auto",
        "Where the Kafka exporter runs, as LOGPIPE_ISOLATION: process (a child process: reading and "
        "recognising lines and kafka-python's work use two cores), thread, or auto (process).",
    )


def load_options(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> TailOptions:
    """Read ``LOGPIPE_TAIL_*`` (arguments win) and check what one field alone cannot."""
    options = config.load(TailOptions, ENV_PREFIX, overrides, environ)
    if not options.paths:
        raise ConfigError(f"nothing to follow: give PATH_OR_GLOB arguments or set {ENV_PREFIX}PATHS")
    if options.max_backoff < options.backoff:
        raise ConfigError(
            f"{ENV_PREFIX}MAX_BACKOFF={options.max_backoff:g} must be at least {ENV_PREFIX}BACKOFF={options.backoff:g}"
        )
    return options
