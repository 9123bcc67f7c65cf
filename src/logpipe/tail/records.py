"""An event of a file -> the record sent for it: the line itself when it is a KafkaLog record, else one built.

A line that is a KafkaLog object (what the ``file`` exporter writes; the test
is `kafkalog_record`, i.e. `logpipe.ingress.parse`'s rules) is sent byte for byte,
with its own ``Id``. Another program's JSON log line (zap, logrus, slog,
structlog, pino, bunyan, ECS, OpenTelemetry, a seed-design record without
``Id``) is mapped onto the KafkaLog keys by `logpipe.formats.normalize`
(`RecordMaker.foreign`). Anything else (plain text, a joined traceback,
broken JSON, garbage) is wrapped into a new KafkaLog record (`wrap_line`),
never dropped.

The records built here get deterministic ids (`file_ids`): the same line read
twice (a restart before the registry moved, a re-read after a crash) is the
same record, so Elasticsearch, whose ``_id`` is the ``Id``, keeps one document.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import tzinfo
from typing import Any

import orjson

from .. import formats, ingress
from ..ingress import printable
from ..record import HOST, Record, encode, format_iso, new_id, wire_document
from ..redact import Redactor
from .events import Assembler, Event
from .fingerprint import Key
from .multiline import rule as multiline_rule
from .options import TailOptions, format_for, zone_of

__all__ = [
    "ID_HEAD_BYTES",
    "WRAPPED_ACTION",
    "WRAPPED_TYPE",
    "RecordMaker",
    "container_time",
    "file_ids",
    "kafkalog_record",
    "printable",
    "wrap_line",
]

#: ``Type`` and ``Action`` of a wrapped line: its level is not known, so it is not guessed.
WRAPPED_TYPE = "raw"
WRAPPED_ACTION = "tail"

#: The most bytes of a file's first line that its records' ids depend on (see `file_ids`).
ID_HEAD_BYTES = 1024

#: Keys one of which a JSON object must have to be read as a log record (else it is wrapped as text:
#: ``{"a": 1}`` keeps its text as ``Msg`` rather than becoming a record with an empty one).
_LOG_KEYS = frozenset(
    (
        "Msg", "msg", "message", "event", "body", "log",
        "Time", "time", "ts", "timestamp", "@timestamp",
        "Type", "level", "severity", "severity_text", "log.level", "levelname", "lvl",
    )
)  # fmt: skip


def kafkalog_record(line: bytes) -> Record | None:
    """The record *line* holds when it is a KafkaLog object (`logpipe.ingress.kafkalog`); None for anything else.

    Such a line is sent byte for byte (the payload *is* the line), so its
    ``Id`` survives and downstream de-duplication works across the
    application's direct sends, spool replays and tails of its file.
    """
    if line[:1] != b"{":  # the common plain-text line: no JSON parse attempted
        return None
    # The Kafka exporter never reads Record.ts (the bytes carry Time): no time parse per line.
    return ingress.kafkalog(line, time.time())


def file_ids(fd: int, key: Key, head_bytes: int = ID_HEAD_BYTES, host: str = HOST) -> Callable[[object], str]:
    """``offset -> Id`` of the records built from the file *fd*: ``event_id(host, dev, ino, head, offset)``.

    *head* is the CRC32 of the file's first line, or of its first
    *head_bytes* when the first line is longer: bytes that never change once
    written, so the id does not change as the file grows (a CRC of "the first
    KiB" would, until the file had a KiB), while two files that share an
    inode number over time (a deleted file's inode reused) but begin
    differently get different ids. Records are only built from complete lines
    or from pieces of at least max_line_bytes (>= *head_bytes*), so the bytes
    it covers are there when the first id is made. Device and inode keep
    apart files that begin with the same line; a rename keeps both.
    Raises `OSError` when the file cannot be read.
    """
    head = os.pread(fd, head_bytes, 0) if head_bytes else b""
    end = head.find(b"\n")
    if end >= 0:
        head = head[: end + 1]
    return formats.event_ids(host, key[0], key[1], f"{zlib.crc32(head):08x}")


def _source(path: str, offset: int, flags: tuple[str, ...]) -> dict[str, Any]:
    """``Field.log``: where the event came from, with Filebeat's (ECS) names."""
    source: dict[str, Any] = {"file": {"path": path}, "offset": offset}
    if flags:
        source["flags"] = list(flags)
    return source


def wrap_line(
    line: bytes,
    path: str,
    offset: int,
    *,
    service: str = "",
    split: bool = False,
    ts: float | None = None,
    record_id: str | None = None,
    flags: tuple[str, ...] = (),
    stream: str | None = None,
    redactor: Redactor | None = None,
) -> Record:
    """A new KafkaLog record for a line (or joined lines) that is not one (see docs/tail.md, "What is recognised").

    ``Type`` is ``raw`` (the level is unknown), ``Action`` ``tail``, ``Time``
    *ts* (default: now, the moment it was read), ``Msg`` the line made
    `printable`, ``Field`` the ECS-style source ``{"log": {"file": {"path":
    ...}, "offset": ...}}`` (plus ``"flags"``: ``split`` for pieces of a line
    longer than max_line_bytes, ``multiline`` for joined lines; and
    ``stream`` for a container's line), ``Id`` *record_id* (default: a new
    UUIDv7); ``Host`` is this machine's, as for every record. With
    *redactor*, secret-looking text in ``Msg`` is masked (`logpipe.redact`).
    """
    ts = time.time() if ts is None else ts
    if split:
        flags = ("split", *flags)
    field: dict[str, Any] = {"log": _source(path, offset, flags)}
    if stream is not None:
        field["stream"] = stream
    if record_id is None:
        record_id = new_id()
    # joined lines keep their line breaks (printable would escape them)
    msg = "\n".join(map(printable, line.split(b"\n"))) if "multiline" in flags else printable(line)
    if redactor is not None:
        msg = redactor.text(msg)
    doc = wire_document(WRAPPED_TYPE, WRAPPED_ACTION, format_iso(ts), msg, field, "", "", "", service, record_id)
    return Record(record_id, ts, "", service, encode(doc))


class RecordMaker:
    """Builds the records of one tailer's events: the settings that shape them are read once, here."""

    def __init__(
        self,
        *,
        service: str = "",
        zone: tzinfo | None = None,
        formats: tuple[str, ...] = (),
        multiline: str = "none",
        multiline_max_bytes: int = 1 << 20,
        max_line_bytes: int = 1 << 19,
        redactor: Redactor | None = None,
    ) -> None:
        self.service = service
        #: Masks secrets in the records this tailer builds (lines already KafkaLog records were masked where made).
        self.redactor = redactor
        self.zone = zone
        self.formats = formats
        self.rule = multiline_rule(multiline)
        self.multiline_max_bytes = multiline_max_bytes
        self.max_line_bytes = max_line_bytes
        self.id_head = min(ID_HEAD_BYTES, max_line_bytes)

    @classmethod
    def from_options(cls, options: TailOptions) -> RecordMaker:
        return cls(
            service=options.service,
            zone=zone_of(options.timezone),
            formats=options.formats,
            multiline=options.multiline,
            multiline_max_bytes=options.multiline_max_bytes,
            max_line_bytes=options.max_line_bytes,
            redactor=Redactor(options.redact_keys, options.redact_pattern) if options.redact else None,
        )

    def format_for(self, path: str) -> str:
        """``auto`` or the format ``LOGPIPE_TAIL_FORMATS`` forces for *path*."""
        return format_for(self.formats, path)

    def assembler(self, framing: str | None) -> Assembler | None:
        """Per-file state for container *framing* (cri, docker, None) and multi-line; None: one line, one event."""
        if framing is None and self.rule is None:
            return None
        return Assembler(framing, self.rule, self.multiline_max_bytes, self.max_line_bytes)

    def foreign(
        self,
        line: bytes,
        path: str,
        offset: int,
        record_id: str,
        *,
        received: float | None = None,
        stream: str | None = None,
    ) -> Record | None:
        """The record of another program's JSON log line (`logpipe.formats.normalize`); None when it is not one.

        Its level, time, message, caller and trace ids become ``Type``,
        ``Time``, ``Msg``, ``FuncName``, ``TraceId``/``SpanId``; the rest goes
        under ``Field``, with the source under ``Field.log`` as for a wrapped line.
        """
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if type(doc) is not dict or _LOG_KEYS.isdisjoint(doc):
            return None
        out, ts = formats.normalize(
            doc,
            received=time.time() if received is None else received,
            record_id=record_id,
            zone=self.zone,
            action=WRAPPED_ACTION,
            service=self.service,
            host=HOST,
        )
        if self.redactor is not None:
            out = self.redactor.document(out) or out
        field = out["Field"]
        if not isinstance(field, dict):
            field = out["Field"] = {"Field": field}
        source = _source(path, offset, ())
        own = field.get("log")
        if isinstance(own, Mapping):  # ECS: log.logger, log.origin ... stay beside the source
            source = {**own, **source}
        elif own is not None:
            field["log_original"] = own
        field["log"] = source
        if stream is not None:
            field.setdefault("stream", stream)
        return Record(out["Id"], ts, out["TraceId"], out["Service"], encode(out))

    def event(self, event: Event, path: str, ids: Callable[[object], str], parse: bool) -> tuple[Record, int]:
        """The record of an assembled *event*, and how it was made: 0 sent as is, 1 mapped (foreign JSON), 2 wrapped.

        *parse*: the file's format lets JSON be recognised (not ``plain``).
        """
        received = None if event.time is None else container_time(event.time)
        data = event.data
        if parse and not event.flags and data[:1] == b"{":
            record = kafkalog_record(data)
            if record is not None:
                return record, 0
            record = self.foreign(data, path, event.offset, ids(event.offset), received=received, stream=event.stream)
            if record is not None:
                return record, 1
        record = wrap_line(
            data,
            path,
            event.offset,
            service=self.service,
            ts=received,
            record_id=ids(event.offset),
            flags=event.flags,
            stream=event.stream,
            redactor=self.redactor,
        )
        return record, 2


def container_time(text: str) -> float | None:
    """Epoch seconds of a container runtime's RFC 3339 time (nanoseconds cut to micro, ``Z`` as ``+00:00``)."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dot = text.find(".")
    if dot >= 0:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        text = text[: dot + 7] + text[end:] if end - dot > 7 else text
    return ingress.parse_time(text)
