"""A line of a file -> the record sent for it: the line itself when it is a KafkaLog record, else a wrapped one.

A line that is a KafkaLog object (what the ``file`` exporter writes; the test
is `kafkalog_record`, i.e. `logpipe.ingress.parse`) is sent byte for byte,
with its own ``Id``; any other line (plain text, another program's JSON,
broken JSON, garbage) is wrapped into a new KafkaLog record (`wrap_line`),
never dropped.
"""

from __future__ import annotations

import time
from typing import Any

from .. import ingress
from ..ingress import printable
from ..record import Record, encode, format_iso, new_id, wire_document

__all__ = ["WRAPPED_ACTION", "WRAPPED_TYPE", "kafkalog_record", "printable", "wrap_line"]

#: ``Type`` and ``Action`` of a wrapped line: its level is not known, so it is not guessed.
WRAPPED_TYPE = "raw"
WRAPPED_ACTION = "tail"


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
