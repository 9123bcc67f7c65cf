"""Dead letters: what cannot be delivered, kept with the reason, in one format, by one writer.

Every path that gives up on something writes it here: the shipper (a message
Elasticsearch refuses, or that is too large), the Elasticsearch exporter (a
record refused with a 4xx), the tailer (a record Kafka refused again and
again), spool replay (a record its primary refuses while it accepts others).
One schema, so one tool reads them all and ``logpipe replay`` can send them
again once the cause is fixed.

A dead-letter file is JSON Lines, one object per letter::

    {"at": "2026-12-03T08:00:00.000+00:00",          # when it was given up on (UTC)
     "reason": "refused by Elasticsearch: mapper_parsing_exception: ...",
     "status": 400,                                  # HTTP status, when there was one
     "index": "logpipe-2026.12.03",                  # Elasticsearch index, when there was one
     "source": {"topic": "logs", "partition": 0, "offset": 41}    # or {"path": ..., "offset": ...}
                                                     # or {"exporter": "elasticsearch"}
     "key": "svc",                                   # the Kafka key, when there was one
     "value": "{\"Type\":\"info\", ...}"}            # the original bytes as text ...
     # ... or "value_base64": "..." when they are not UTF-8, so nothing is lost

A letter written to Kafka instead keeps the original key, value and headers
unchanged and adds ``logpipe.dlq.*`` headers (`kafka_headers`).

Files are appended with one write and fsynced before the letters count as
handled (a dead letter is the only copy of what it holds).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from . import durable

__all__ = ["HEADER_PREFIX", "DeadLetter", "FileDeadLetters", "entry", "kafka_headers", "original", "read"]

#: Header names of a dead letter written to Kafka (the original headers come first).
HEADER_PREFIX = "logpipe.dlq."


@dataclass(frozen=True)
class DeadLetter:
    """One thing that cannot be delivered, and why."""

    value: bytes | None
    reason: str
    #: Where it came from: ``{"topic", "partition", "offset"}``, ``{"path", "offset"}`` or ``{"exporter"}``.
    source: Mapping[str, Any] = field(default_factory=dict)
    status: int | None = None
    index: str | None = None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


def entry(letter: DeadLetter, at: datetime | None = None) -> dict[str, Any]:
    """The JSON object of *letter* in a dead-letter file."""
    moment = at or datetime.now(timezone.utc)
    doc: dict[str, Any] = {
        "at": moment.isoformat(timespec="milliseconds"),
        "reason": letter.reason,
        "status": letter.status,
        "index": letter.index,
        "source": dict(letter.source),
    }
    if letter.key is not None:
        doc["key"] = letter.key.decode("utf-8", "backslashreplace")
    doc.update(_value_fields(letter.value))
    return doc


def _value_fields(value: bytes | None) -> dict[str, Any]:
    if value is None:
        return {"value": None}
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode("ascii")}


def original(doc: Mapping[str, Any]) -> bytes | None:
    """The original bytes of a dead-letter file entry (the inverse of `entry` for the value)."""
    if "value_base64" in doc:
        return base64.b64decode(doc["value_base64"])
    value = doc.get("value")
    return None if value is None else str(value).encode()


def kafka_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The ``logpipe.dlq.*`` headers added to a letter sent to a Kafka topic."""
    headers = [(HEADER_PREFIX + "reason", letter.reason.encode())]
    for name, value in letter.source.items():
        headers.append((HEADER_PREFIX + name, str(value).encode()))
    if letter.status is not None:
        headers.append((HEADER_PREFIX + "status", str(letter.status).encode()))
    if letter.index is not None:
        headers.append((HEADER_PREFIX + "index", letter.index.encode()))
    return headers


class FileDeadLetters:
    """Appends letters to one JSON Lines file, durably; *variable* names the setting in errors."""

    def __init__(self, path: Path | str, variable: str = "") -> None:
        self.path = Path(path)
        self.variable = variable

    def write(self, letters: Sequence[DeadLetter]) -> None:
        """Append *letters* with one write and fsync; raises `OSError` (naming the setting) when it cannot."""
        if not letters:
            return
        data = b"".join(orjson.dumps(entry(letter), option=orjson.OPT_NON_STR_KEYS) + b"\n" for letter in letters)
        try:
            durable.append(self.path, data)
        except OSError as exc:
            where = f" ({self.variable})" if self.variable else ""
            raise OSError(exc.errno, f"dead-letter file {self.path}{where}: {exc.strerror or exc}") from exc

    def describe(self) -> str:
        return str(self.path)


def read(path: Path | str) -> Iterator[dict[str, Any]]:
    """The entries of a dead-letter file, oldest first (lines that are not JSON objects are skipped)."""
    with open(path, "rb") as handle:
        for line in handle:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                yield doc
