"""Settings of ``logpipe tail`` (``LOGPIPE_TAIL_*``), read once and checked with errors naming the variable."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import config
from ..config import at_least, regex, setting
from ..exceptions import ConfigError

__all__ = ["ENV_PREFIX", "FORMATS", "TailOptions", "load_options"]

ENV_PREFIX = "LOGPIPE_TAIL_"

#: What the lines of a file are (docs/tail.md, "What is recognised"): ``auto`` recognises each line
#: (KafkaLog, another program's JSON, text) and container framing from a file's first line.
FORMATS = ("auto", "json", "plain", "cri", "docker")

#: The multi-line presets (`logpipe.tail.multiline`); any other value is a start-of-event regex.
MULTILINE_PRESETS = ("none", "python", "java", "indented")


def _format_rules(value: tuple[str, ...]) -> str | None:
    for rule in value:
        glob, sep, name = rule.rpartition("=")
        if not sep or not glob.strip():
            return f"{rule!r} is not GLOB=FORMAT"
        if name.strip() not in FORMATS:
            return f"{rule!r}: unknown format {name.strip()!r}; choose one of {', '.join(FORMATS)}"
    return None


def _multiline(value: str) -> str | None:
    if value in MULTILINE_PRESETS:
        return None
    return config.regex(value)


def _zone(value: str) -> str | None:
    try:
        zone_of(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        return f"not a time zone ({exc or 'unknown name'}); use local, UTC or an IANA name such as Europe/Berlin"
    return None


def zone_of(name: str) -> tzinfo | None:
    """The zone a setting names; None for ``local`` (this machine's zone)."""
    return None if name == "local" else ZoneInfo(name)


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
    service: str = setting(
        "", "Service of the records the tailer builds (lines that are not KafkaLog records and name no service)."
    )
    redact: bool = setting(
        True,
        "Mask secrets in the records the tailer builds (wrapped and mapped lines), by LOGPIPE_REDACT's rules; "
        "lines that are already KafkaLog records were masked where they were made.",
    )
    redact_keys: tuple[str, ...] = setting((), "More key names whose values are masked (case-insensitive).")
    redact_pattern: str | None = setting(
        None, "A regular expression whose matches in any text are masked too.", check=regex
    )
    formats: tuple[str, ...] = setting(
        (),
        "Format forced per file glob, comma list of GLOB=FORMAT (auto, json, plain, cri, docker), first match "
        "wins, e.g. /var/log/containers/*.log=cri,*.txt=plain; other files: auto (each line recognised).",
        check=_format_rules,
    )
    multiline: str = setting(
        "none",
        "Joining of plain-text lines into one event: none, python (tracebacks), java (stack traces), indented "
        "(lines starting with whitespace continue), or a regular expression matching the first line of an event.",
        check=_multiline,
    )
    multiline_max_bytes: int = setting(
        1024 * 1024, "Largest joined event; a longer one is sent in parts (each a record).", check=at_least(16)
    )
    multiline_timeout: float = setting(
        5.0,
        "Seconds without new data after which an incomplete event (the last traceback of a quiet file) is sent.",
        check=at_least(0),
    )
    timezone: str = setting(
        "local",
        "Zone of times without a UTC offset in other programs' JSON lines: local (this machine's) or an IANA name.",
        check=_zone,
    )
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
        "recognising lines and kafka-python's work use two cores), thread, or auto (the exporter's choice: "
        "in process with confluent-kafka, whose threads are C threads; a child process with kafka-python).",
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


def format_for(rules: tuple[str, ...], path: str) -> str:
    """The format *rules* (``formats``) force for *path* (a glob matching its absolute path or name), else auto."""
    name = os.path.basename(path)
    for rule in rules:
        glob, _, fmt = rule.rpartition("=")
        glob = os.path.expanduser(glob.strip())
        if fnmatch.fnmatchcase(path, glob) or fnmatch.fnmatchcase(name, glob):
            return fmt.strip()
    return "auto"
