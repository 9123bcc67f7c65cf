"""``logpipe tail``: follow log files and send each line to Kafka (Filebeat's role).

Each line of a followed file becomes one Kafka message through logpipe's own
`KafkaExporter`, so the ``LOGPIPE_KAFKA_*`` settings, the ``id``/``trace_id``
headers and the outage detection are the same as for records logged directly:

* a line that is a KafkaLog object (what the ``file`` exporter writes; the
  test is `kafkalog_record`) is sent byte for byte, with its own ``Id``;
* any other line (plain text, another program's JSON, broken JSON, garbage)
  is wrapped into a new KafkaLog record (`wrap_line`), never dropped.

Delivery is at least once. What has been acknowledged is kept in a registry
file (`Registry`): one offset per file, keyed by device and inode, replaced
atomically (temp file, fsync, rename) and only ever advanced to the end of
lines whose records Kafka acknowledged. A restart or a crash resumes there.
While Kafka is unreachable nothing is spooled and nothing piles up in memory:
the file is the buffer. The tailer stops reading, retries the records it has
in hand with backoff, and reads on when they are delivered.

Files are followed by identity (device + inode), not by name, so rotation by
rename is seen as what it is: the old file is read to its end (and closed
once it has been quiet for ``close_rotated`` seconds) while a new file with
the old name is picked up from its first byte. A file that shrinks below the
offset was truncated and is read again from 0.

`Tailer` is the Python API (run it in a thread, call `Tailer.stop`), like
`logpipe.shipper.Shipper`; `logpipe.cli.tail` wraps it in a command.
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import orjson

from . import config, durable, ingress
from .config import at_least, setting
from .exceptions import ConfigError
from .exporters.base import Exporter, ExportResult, Outcome, PartialFailure, Pending
from .ingress import printable
from .record import Record, encode, format_iso, new_id, wire_document

__all__ = [
    "ENV_PREFIX",
    "Registry",
    "RegistryEntry",
    "TailOptions",
    "TailStats",
    "Tailer",
    "kafkalog_record",
    "load_options",
    "printable",
    "wrap_line",
]

ENV_PREFIX = "LOGPIPE_TAIL_"

#: ``Type`` and ``Action`` of a wrapped line: its level is not known, so it is not guessed.
WRAPPED_TYPE = "raw"
WRAPPED_ACTION = "tail"

#: Longest ``Id`` kept as is (Elasticsearch's ``_id`` limit, what ``logpipe ship`` accepts).
_MAX_ID_BYTES = 512

#: Bytes read from a file at a time.
_CHUNK = 1 << 20

#: Bytes of a file's beginning that the registry fingerprints (inode reuse, truncate-and-rewrite).
_HEAD_BYTES = 1024

REGISTRY_VERSION = 1

Key = tuple[int, int]


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
        "JSON Lines file of records Kafka refused (the payloads as they would have been sent).",
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


# -- turning lines into records -------------------------------------------------------------


def kafkalog_record(line: bytes) -> Record | None:
    """The record *line* holds when it is a KafkaLog object (`logpipe.ingress.parse`); None for anything else.

    Such a line is sent byte for byte (the payload *is* the line), so its
    ``Id`` survives and downstream de-duplication works across the
    application's direct sends, spool replays and tails of its file.
    """
    if line[:1] != b"{":  # the common plain-text line: no JSON parse attempted
        return None
    result = ingress.parse(line)
    return None if isinstance(result, ingress.Invalid) else result


def wrap_line(
    line: bytes,
    path: str,
    offset: int,
    *,
    service: str = "",
    split: bool = False,
    ts: float | None = None,
) -> Record:
    """A new KafkaLog record for a line that is not one (see docs/tail.md, "What is wrapped").

    ``Type`` is ``raw`` (the level is unknown), ``Action`` ``tail``, ``Time``
    the moment it was read, ``Msg`` the line made `printable`, ``Field`` the
    ECS-style source ``{"log": {"file": {"path": ...}, "offset": ...}}`` (plus
    ``"flags": ["split"]`` for pieces of a line longer than max_line_bytes),
    a new UUIDv7 ``Id``; ``Host`` is this machine's, as for every record.
    """
    ts = time.time() if ts is None else ts
    source: dict[str, Any] = {"file": {"path": path}, "offset": offset}
    if split:
        source["flags"] = ["split"]
    record_id = new_id()
    doc = wire_document(
        WRAPPED_TYPE, WRAPPED_ACTION, format_iso(ts), printable(line), {"log": source}, "", "", "", service, record_id
    )
    return Record(record_id, ts, "", service, encode(doc))


# -- the registry ---------------------------------------------------------------------------


@dataclass
class RegistryEntry:
    """What is known of one file: where it was last seen and how far Kafka has it."""

    dev: int
    ino: int
    path: str
    #: Bytes from the start of the file whose lines are acknowledged (always at a line end).
    offset: int
    #: CRC32 of the file's first ``head_len`` bytes, to tell a reused inode from the file it was.
    head: int = 0
    head_len: int = 0

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)


class Registry:
    """The acknowledged offsets, on disk as one JSON document replaced atomically.

    ``{"version": 1, "files": [{"dev", "ino", "path", "offset", "head", "head_len", "updated"}]}``:
    written to ``<name>.tmp``, fsynced, renamed over the old one, and the
    directory fsynced, so a crash leaves the old or the new registry, never
    half of one.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[Key, RegistryEntry] = {}

    def load(self) -> Registry:
        """Read the file (a missing one is an empty registry); raises ConfigError when it is unreadable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return self
        except OSError as exc:
            raise ConfigError(f"{ENV_PREFIX}REGISTRY={str(self.path)!r}: cannot read the registry: {exc}") from None
        try:
            doc = orjson.loads(data)
            if doc.get("version") != REGISTRY_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {REGISTRY_VERSION}")
            for item in doc["files"]:
                entry = RegistryEntry(
                    int(item["dev"]),
                    int(item["ino"]),
                    str(item["path"]),
                    int(item["offset"]),
                    int(item.get("head", 0)),
                    int(item.get("head_len", 0)),
                )
                self.entries[entry.key] = entry
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(
                f"{ENV_PREFIX}REGISTRY={str(self.path)!r}: not a logpipe tail registry ({exc}); "
                f"move it away to start over (every file is then read from the start)"
            ) from None
        return self

    def save(self) -> None:
        """Replace the file atomically with the current entries."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        files = [
            {
                "dev": e.dev,
                "ino": e.ino,
                "path": e.path,
                "offset": e.offset,
                "head": e.head,
                "head_len": e.head_len,
                "updated": now,
            }
            for e in sorted(self.entries.values(), key=lambda e: e.path)
        ]
        data = orjson.dumps({"version": REGISTRY_VERSION, "files": files}, option=orjson.OPT_INDENT_2) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        durable.replace(self.path, data, temp=self.path.with_name(self.path.name + ".tmp"))


# -- counters -------------------------------------------------------------------------------


@dataclass
class TailStats:
    """Counters of one `Tailer`, updated by its thread (read them from its progress callback or after `run`)."""

    #: Lines taken from files (pieces of split lines count one each; empty lines too).
    lines_read: int = 0
    bytes_read: int = 0
    #: Records Kafka acknowledged.
    sent: int = 0
    #: Of the records read, those made by `wrap_line` (the line was not a KafkaLog object).
    wrapped: int = 0
    #: Lines longer than max_line_bytes (each split into pieces).
    too_long: int = 0
    #: Empty lines, skipped.
    empty: int = 0
    #: Records written to the dead-letter file.
    dead_lettered: int = 0
    #: Batches (or their failed records) sent again.
    retries: int = 0
    files_open: int = 0
    rotations: int = 0
    truncations: int = 0
    #: Records handed to Kafka and not acknowledged yet.
    in_flight: int = 0
    errors: int = 0
    last_error: str | None = None
    state: str = "starting"
    started: float = field(default_factory=time.monotonic)
    first_at: float | None = None
    last_at: float | None = None
    #: Called with the seconds from handing a batch to Kafka to its answer (`logpipe.metrics`' histogram).
    on_batch: Callable[[float], None] | None = None

    @property
    def rate(self) -> float:
        """Records acknowledged per second, from the first line read to the last acknowledgement."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return self.sent / (self.last_at - self.first_at)


# -- one file -------------------------------------------------------------------------------


class _Harvester:
    """One open file: what has been read, what is acknowledged, the lines not yet batched."""

    def __init__(self, key: Key, path: str, fd: int, offset: int, head: tuple[int, int]) -> None:
        self.key = key
        self.path = path
        self.fd = fd
        #: Acknowledged offset (what the registry says) and the offset of the next line to batch.
        self.committed = offset
        self.pos = offset
        #: Bytes read so far (pos plus the lines and partial line held).
        self.read_to = offset
        self.head = head
        #: Bumped by truncation: acknowledgements of lines read before it no longer count.
        self.generation = 0
        self.lines: list[bytes] = []
        self.index = 0
        #: Line index -> bytes of the file it stands for, for pieces of split lines (no newline of their own).
        self.pieces: dict[int, int] = {}
        self.partial = b""
        #: The partial line continues a line that was split (its remainder is a piece too).
        self.continued = False
        #: Renamed or removed away from its pattern: the writer has moved on.
        self.moved = False
        self.last_data = time.monotonic()
        self.at_eof = False

    def has_lines(self) -> bool:
        return self.index < len(self.lines)

    def read(self, max_line: int, stats: TailStats) -> bool:
        """Read the next chunk into lines; False at the end of the file (for now)."""
        if self.lines and self.index >= len(self.lines):
            self.lines, self.index, self.pieces = [], 0, {}
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            size = self.read_to
        if size < self.read_to:  # truncated: whatever was held is gone from the file
            stats.truncations += 1
            self.generation += 1
            self.pos = self.committed = self.read_to = 0
            self.lines, self.index, self.pieces, self.partial, self.continued = [], 0, {}, b"", False
            self.head = (0, 0)
        if size == self.read_to:
            self.at_eof = True
            return False
        chunk = os.pread(self.fd, min(_CHUNK, size - self.read_to), self.read_to)
        if not chunk:
            self.at_eof = True
            return False
        self.at_eof = False
        self.last_data = time.monotonic()
        self.read_to += len(chunk)
        stats.bytes_read += len(chunk)
        if self.partial:
            chunk = self.partial + chunk
        lines = chunk.split(b"\n")
        self.partial = lines.pop()
        if self.continued and lines:
            self.pieces[len(self.lines)] = len(lines[0]) + 1
            self.continued = False
        if len(self.partial) > max_line or any(len(line) > max_line for line in lines):
            lines = self._split_long(lines, max_line, stats)
        self.lines.extend(lines)
        return True

    def _split_long(self, lines: list[bytes], max_line: int, stats: TailStats) -> list[bytes]:
        """Cut lines (and the partial one) longer than *max_line* into pieces, marking them."""
        out: list[bytes] = []
        base = len(self.lines)
        for line in lines:
            index = base + len(out)
            carried = self.pieces.pop(index, None)
            if len(line) <= max_line:
                if carried is not None:
                    self.pieces[index] = carried
                out.append(line)
                continue
            if carried is None:
                stats.too_long += 1
            for start in range(0, len(line), max_line):
                piece = line[start : start + max_line]
                last = start + max_line >= len(line)
                self.pieces[base + len(out)] = len(piece) + (1 if last else 0)
                out.append(piece)
        while len(self.partial) > max_line:
            if not self.continued:
                stats.too_long += 1
            piece, self.partial = self.partial[:max_line], self.partial[max_line:]
            self.pieces[base + len(out)] = len(piece)
            out.append(piece)
            self.continued = True
        return out

    def flush_partial(self) -> bool:
        """Turn an incomplete last line into a line (the file is done); True when there was one."""
        if not self.partial:
            return False
        if self.continued:
            self.pieces[len(self.lines)] = len(self.partial)
            self.continued = False
        else:
            self.pieces[len(self.lines)] = -len(self.partial)  # negative: a whole line without newline
        self.lines.append(self.partial)
        self.partial = b""
        return True

    def take(self, limit: int, budget: int, out: list[Record], service: str, stats: TailStats) -> tuple[int, int]:
        """Append records of up to *limit* lines / *budget* bytes to *out*; (lines taken, bytes taken)."""
        lines = self.lines
        start = self.index
        stop = min(len(lines), start + limit)
        taken = 0
        pos = self.pos
        pieces = self.pieces
        path = self.path
        append = out.append
        wrapped = empty = 0
        k = start
        while k < stop:
            line = lines[k]
            size = len(line)
            if taken + size > budget and k > start:
                break
            taken += size
            consumed = size + 1
            split = False
            if pieces and k in pieces:
                consumed = pieces[k]
                if consumed < 0:
                    consumed = -consumed
                else:
                    split = True
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                empty += 1
            else:
                record = None if split else kafkalog_record(line)
                if record is None:
                    record = wrap_line(line, path, pos, service=service, split=split)
                    wrapped += 1
                append(record)
            pos += consumed
            k += 1
        stats.lines_read += k - start
        stats.wrapped += wrapped
        stats.empty += empty
        self.index = k
        self.pos = pos
        return k - start, taken


# -- batches in flight ----------------------------------------------------------------------


@dataclass
class _Batch:
    """Records read together, the file offsets they reach, and which of them Kafka has not taken yet."""

    records: list[Record]
    #: key -> (harvester, its generation, offset after the batch's last line of it)
    marks: dict[Key, tuple[_Harvester, int, int]]
    todo: list[Record]
    in_flight: bool = False
    #: Some of its records failed once: no new lines are read until it is settled.
    retried: bool = False
    attempts: dict[int, int] = field(default_factory=dict)


class _Failed:
    """The `Pending` of a batch whose `Exporter.begin` raised."""

    def wait(self) -> ExportResult | PartialFailure:
        return ExportResult.FAILURE


@dataclass
class _Flight:
    pending: Pending[Outcome]
    batch: _Batch
    sent: list[Record]
    started: float = field(default_factory=time.monotonic)


# -- the tailer -----------------------------------------------------------------------------


class Tailer:
    """Follows the files matching ``options.paths`` and sends their lines through *exporter*.

    `run` blocks until `stop` (or, with *once*, until every matching file is
    read to its end and everything read is acknowledged). *exporter* defaults
    to the ``kafka`` exporter configured from ``LOGPIPE_KAFKA_*`` (with
    *exporter_overrides*); a given exporter is not shut down by the tailer.
    *progress* is called from the tailer's thread every ``status_interval``
    seconds and once at the end.
    """

    def __init__(
        self,
        options: TailOptions,
        exporter: Exporter | None = None,
        *,
        once: bool = False,
        exporter_overrides: Mapping[str, Any] | None = None,
        progress: Callable[[TailStats], None] | None = None,
    ) -> None:
        self.options = options
        self.once = once
        self.stats = TailStats()
        self._own_exporter = exporter is None
        if exporter is None:
            from . import plugins
            from .exporters.process import isolate

            exporter = isolate(plugins.create("kafka", exporter_overrides), options.isolation)
        self.exporter = exporter
        self.registry = Registry(options.registry)
        self._progress = progress
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._open: dict[Key, _Harvester] = {}
        self._flights: deque[_Flight] = deque()
        self._unsettled: deque[_Batch] = deque()
        self._failing = False
        self._retry_at = 0.0
        self._delay = options.backoff
        self._dirty = False
        self._saved_at: float | None = None
        self._next_scan = 0.0
        self._next_tick = 0.0
        self._first_scan = True
        self._own_paths = {os.path.abspath(options.registry), os.path.abspath(options.dead_letter)}

    # -- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to finish the batches in flight, write the registry and return (thread- and signal-safe)."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.options.shutdown_timeout
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def unacknowledged(self) -> int:
        """Records read and not yet acknowledged nor dead-lettered."""
        return sum(len(b.todo) for b in self._unsettled)

    def run(self) -> TailStats:
        """Tail until `stop` (or the end of every file with *once*); returns the final counters.

        Raises `ConfigError` for an unreadable registry.
        """
        try:
            self.registry.load()
            self.stats.state = "running"
            self._loop()
            self._drain()
        finally:
            self._save(force=True)
            self._close_all()
            if self._own_exporter:
                self.exporter.shutdown(5.0)
            self.stats.state = "stopped"
            self._tick(force=True)
        return self.stats

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        max_in_flight = max(1, self.exporter.max_in_flight)
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= self._next_scan:
                self._scan()
                self._next_scan = now + self.options.scan_interval
            began = False
            read = False
            if self._failing or self._unsent():
                if not self._flights and now >= self._retry_at:
                    began = self._resend(max_in_flight)
            elif not self._recovering():
                batch = self._collect()
                if batch is not None:
                    read = True
                    began = self._begin(batch)
            if self._flights and (len(self._flights) >= max_in_flight or not began):
                self._complete(self._flights.popleft())
                continue
            if began or read:
                continue
            self._close_idle()
            self._save()
            self._tick()
            if self.once and self._finished():
                break
            wait = self.options.poll_interval
            if self._failing:
                wait = max(0.0, min(wait, self._retry_at - time.monotonic()))
            self._stop.wait(wait)

    def _unsent(self) -> bool:
        """Failed records wait to be sent again (more failed batches than fit in flight at once)."""
        return any(b.todo and not b.in_flight for b in self._unsettled)

    def _recovering(self) -> bool:
        """Records that failed are still unsettled: the file waits (memory stays bounded by what is in hand)."""
        return any(b.retried for b in self._unsettled)

    def _finished(self) -> bool:
        """With *once*: every file at its end and every record settled."""
        if self._flights or self._unsettled:
            return False
        return all(h.at_eof and not h.has_lines() for h in self._open.values())

    def _drain(self) -> None:
        """After a stop: wait for the batches in flight (up to shutdown_timeout), retry none."""
        while self._flights:
            deadline = self._stop_deadline
            if deadline is not None and time.monotonic() >= deadline:
                self._error(f"stopped with {len(self._flights)} batch(es) in flight; they are read again next time")
                return
            self._complete(self._flights.popleft())

    # -- reading --------------------------------------------------------------------------------

    def _collect(self) -> _Batch | None:
        """Records of up to batch_size lines / batch_bytes from the open files, round robin."""
        o = self.options
        records: list[Record] = []
        marks: dict[Key, tuple[_Harvester, int, int]] = {}
        lines_left, bytes_left = o.batch_size, o.batch_bytes
        for h in list(self._open.values()):
            if lines_left <= 0 or bytes_left <= 0:
                break
            if not h.has_lines():
                generation = h.generation
                try:
                    h.read(o.max_line_bytes, self.stats)
                except OSError as exc:
                    self._error(f"{h.path}: {exc}")
                    continue
                if h.generation != generation:
                    self._dirty = True  # truncated: the registry goes back to 0 too
                if not h.has_lines() and h.moved and self._done_with(h):
                    h.flush_partial()
            if not h.has_lines():
                continue
            n, size = h.take(lines_left, bytes_left, records, o.service, self.stats)
            lines_left -= n
            bytes_left -= size
            marks[h.key] = (h, h.generation, h.pos)
        if not marks:
            return None
        if self.stats.first_at is None:
            self.stats.first_at = time.monotonic()
        return _Batch(records, marks, list(records))

    def _done_with(self, h: _Harvester) -> bool:
        """A moved file that has been quiet long enough (at once in --once mode) is finished."""
        return self.once or time.monotonic() - h.last_data >= self.options.close_rotated

    # -- sending --------------------------------------------------------------------------------

    def _begin(self, batch: _Batch) -> bool:
        """Hand *batch* to the exporter; False when it had no records (only empty lines: settled at once)."""
        self._unsettled.append(batch)
        if not batch.todo:
            self._settle()
            return False
        self._send(batch, batch.todo)
        return True

    def _send(self, batch: _Batch, records: list[Record]) -> None:
        batch.in_flight = True
        try:
            pending: Pending[Outcome] = self.exporter.begin(records)
        except Exception as exc:  # noqa: BLE001 - the contract: an exception is a FAILURE
            self._error(f"export: {type(exc).__name__}: {exc}")
            pending = _Failed()
        self.stats.in_flight += len(records)
        self._flights.append(_Flight(pending, batch, records))

    def _resend(self, max_in_flight: int) -> bool:
        """Begin the records of failed batches again, oldest first; True when something was begun."""
        began = False
        for batch in self._unsettled:
            if len(self._flights) >= max_in_flight:
                break
            if batch.todo and not batch.in_flight:
                self.stats.retries += 1
                self._send(batch, batch.todo)
                began = True
        if began:
            self._failing = False
        return began

    def _complete(self, flight: _Flight) -> None:
        """Wait for *flight*; count, dead-letter or keep for retry what it did not deliver, then settle."""
        batch, sent = flight.batch, flight.sent
        try:
            outcome = flight.pending.wait()
        except Exception as exc:  # noqa: BLE001
            self._error(f"export: {type(exc).__name__}: {exc}")
            outcome = ExportResult.FAILURE
        if self.stats.on_batch is not None:
            self.stats.on_batch(time.monotonic() - flight.started)
        self.stats.in_flight -= len(sent)
        batch.in_flight = False
        if outcome is ExportResult.SUCCESS:
            failed: list[Record] = []
            self.stats.sent += len(sent)
        elif isinstance(outcome, PartialFailure):
            self.stats.sent += len(sent) - len(outcome.failed)
            failed = self._refused(batch, list(outcome.failed))
        else:
            failed = list(sent)
        batch.todo = failed
        self.stats.last_at = time.monotonic()
        if failed:
            batch.retried = True
            self._fail(f"{len(failed)} of {len(sent)} record(s) not acknowledged by {self.exporter.describe()}")
        else:
            self._delay = self.options.backoff
        self._settle()

    def _refused(self, batch: _Batch, failed: list[Record]) -> list[Record]:
        """Records of a PartialFailure; those refused max_attempts times are dead-lettered and dropped here."""
        dead: list[Record] = []
        keep: list[Record] = []
        for record in failed:
            tries = batch.attempts.get(id(record), 0) + 1
            batch.attempts[id(record)] = tries
            (dead if tries >= self.options.max_attempts else keep).append(record)
        if dead:
            try:
                _append_lines(self.options.dead_letter, dead)
            except OSError as exc:
                self._error(f"dead-letter file {self.options.dead_letter} ({ENV_PREFIX}DEAD_LETTER): {exc}")
                return failed
            self.stats.dead_lettered += len(dead)
            self._error(
                f"{len(dead)} record(s) refused {self.options.max_attempts} times written to "
                f"{self.options.dead_letter}, e.g. Id {dead[0].id}"
            )
        return keep

    def _fail(self, reason: str) -> None:
        """Stop reading; send the records in hand again after the backoff."""
        if not self._failing:
            self._error(f"{reason}; retrying in {self._delay:g}s")
        self._failing = True
        self.stats.state = "waiting for Kafka"
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.options.max_backoff)

    def _settle(self) -> None:
        """Advance committed offsets past every fully delivered batch at the head of the line."""
        while self._unsettled and not self._unsettled[0].todo and not self._unsettled[0].in_flight:
            batch = self._unsettled.popleft()
            for h, generation, end in batch.marks.values():
                if h.generation == generation and end > h.committed:
                    h.committed = end
                    self._dirty = True
        if not self._unsettled and not self._failing:
            self.stats.state = "running"

    # -- files ----------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Match the patterns: open new and grown files, notice rotated and removed ones."""
        seen: dict[Key, str] = {}
        for pattern in self.options.paths:
            for name in sorted(glob.glob(os.path.expanduser(pattern))):
                path = os.path.abspath(name)
                if path in self._own_paths or path.endswith(".tmp") and path[:-4] in self._own_paths:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not _is_regular(st.st_mode):
                    continue
                seen.setdefault((st.st_dev, st.st_ino), path)
        for key, h in self._open.items():
            now_at = seen.get(key)
            if now_at != h.path:  # renamed or removed: the writer has moved on to another file
                if not h.moved:
                    h.moved = True
                    self.stats.rotations += 1
                if now_at is not None:
                    h.path = now_at
        for key, path in seen.items():
            if key not in self._open:
                self._maybe_open(key, path)
        for key in [k for k, e in self.registry.entries.items() if k not in seen and k not in self._open]:
            del self.registry.entries[key]  # gone from every pattern: forget it
            self._dirty = True
        self._first_scan = False
        self.stats.files_open = len(self._open)

    def _maybe_open(self, key: Key, path: str) -> None:
        entry = self.registry.entries.get(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self._error(f"cannot open {path}: {exc}")
            return
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != key:  # replaced between stat and open: next scan
                os.close(fd)
                return
            offset = 0
            head = (0, 0)
            if entry is not None:
                if entry.head_len and _crc(fd, entry.head_len) != entry.head:
                    offset = 0  # a reused inode or a file rewritten while we were away
                    self._error(f"{path}: not the file the registry knew under this inode; reading it from the start")
                elif st.st_size < entry.offset:
                    self.stats.truncations += 1
                    offset = 0
                else:
                    offset = entry.offset
                    head = (entry.head, entry.head_len)
                if offset == st.st_size and offset == entry.offset and entry.path == path:
                    os.close(fd)  # nothing new: stay closed until it grows
                    return
            elif self._first_scan and self.options.start == "end":
                offset = st.st_size
        except OSError as exc:
            os.close(fd)
            self._error(f"{path}: {exc}")
            return
        h = _Harvester(key, path, fd, offset, head)
        self._open[key] = h
        if entry is None or entry.offset != offset or entry.path != path:
            self.registry.entries[key] = RegistryEntry(key[0], key[1], path, offset, head[0], head[1])
            self._dirty = True

    def _close_idle(self) -> None:
        """Close files that are done: moved and quiet for close_rotated, or quiet for close_inactive."""
        now = time.monotonic()
        for key, h in list(self._open.items()):
            if h.has_lines() or not h.at_eof or h.committed < h.pos:
                continue
            if any(key in b.marks for b in self._unsettled):
                continue
            quiet = now - h.last_data
            moved_done = h.moved and (self.once or quiet >= self.options.close_rotated) and not h.partial
            if moved_done or (not h.moved and quiet >= self.options.close_inactive and not self.once):
                self._update_entry(h)
                os.close(h.fd)
                del self._open[key]
        self.stats.files_open = len(self._open)

    def _close_all(self) -> None:
        for h in self._open.values():
            with contextlib.suppress(OSError):
                os.close(h.fd)
        self._open.clear()
        self.stats.files_open = 0

    # -- the registry -----------------------------------------------------------------------

    def _update_entry(self, h: _Harvester) -> None:
        entry = self.registry.entries.get(h.key)
        if h.head[1] < _HEAD_BYTES and h.committed > h.head[1]:
            length = min(_HEAD_BYTES, h.committed)
            with contextlib.suppress(OSError):
                h.head = (_crc(h.fd, length), length)
        if entry is None:
            self.registry.entries[h.key] = RegistryEntry(h.key[0], h.key[1], h.path, h.committed, *h.head)
            return
        entry.path, entry.offset = h.path, h.committed
        entry.head, entry.head_len = h.head

    def _save(self, force: bool = False) -> None:
        """Write the registry when progress was made, at most every registry_flush seconds (unless *force*)."""
        now = time.monotonic()
        recent = self._saved_at is not None and now - self._saved_at < self.options.registry_flush
        if not self._dirty or (not force and recent):
            return
        for h in self._open.values():
            self._update_entry(h)
        try:
            self.registry.save()
        except OSError as exc:
            self._error(f"cannot write the registry {self.registry.path} ({ENV_PREFIX}REGISTRY): {exc}")
            return
        self._dirty = False
        self._saved_at = now

    # -- reporting ----------------------------------------------------------------------------

    def _tick(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now < self._next_tick:
            return
        self._next_tick = now + self.options.status_interval
        with contextlib.suppress(Exception):  # a display must not stop the tailing
            self._progress(self.stats)

    def _error(self, text: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = text


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _crc(fd: int, length: int) -> int:
    return zlib.crc32(os.pread(fd, length, 0))


def _append_lines(path: Path, records: Sequence[Record]) -> None:
    """Append the payloads to *path*, one per line, in one write, then fsync."""
    durable.append(path, b"".join(r.payload + b"\n" for r in records))
