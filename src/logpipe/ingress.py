"""The one ingress: bytes from a topic, a file or the spool -> a `Record`, or the reason they are not one.

The spool's replay, ``logpipe tail`` and ``logpipe ship`` all receive bytes
that someone else wrote and must decide the same thing: is this a KafkaLog
record that can travel as it is? One function (`parse`) with one set of
rules, and one time parser (`parse_time`), answers for all three, so a line
the tailer sends byte for byte is exactly a message the shipper indexes.

A KafkaLog record here is a JSON object with

* ``Id``: a non-empty string of at most 512 bytes (Elasticsearch's ``_id``
  limit: it becomes the document id, the key of de-duplication);
* ``Time``: a string;
* ``Msg``: present.

Anything else is `Invalid`, with a reason a human can act on; what happens
to it (wrapped into a new record by the tailer, dead-lettered by the
shipper, counted as torn by the spool) is the caller's decision.

``Time`` is read by `parse_time`. A record whose ``Time`` no parser reads
keeps its bytes unchanged and gets ``received`` (the moment it was read) as
its `Record.ts`: the timestamp only picks the daily index; the document keeps
the text it came with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, tzinfo

import orjson

from .record import SEED_TIME_FORMAT, Record

__all__ = ["MAX_ID_BYTES", "Invalid", "json_type", "kafkalog", "parse", "parse_time", "printable"]

#: Longest ``Id`` (Elasticsearch's ``_id`` limit).
MAX_ID_BYTES = 512
#: An ``Id`` of at most this many characters is within MAX_ID_BYTES whatever they are (UTF-8 takes at most
#: 4 bytes a code point), so only a longer one is encoded to be measured.
_ID_SAFE_CHARS = MAX_ID_BYTES // 4

_fromisoformat = datetime.fromisoformat
_strptime = datetime.strptime
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_new_record = tuple.__new__


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why some bytes are not a KafkaLog record."""

    reason: str


def parse_time(text: str, zone: tzinfo | None = None) -> float | None:
    """Epoch seconds of a ``Time`` text, or None when it is not a time.

    Reads ISO 8601 (what logpipe writes, with or without an offset) and the
    seed design's ``YYYY-MM-DD HH:MM:SS``. A time without an offset is read in
    *zone* (None: this machine's local zone, as the seed's Go services write it).
    """
    moment = _moment(text)
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone() if zone is None else moment.replace(tzinfo=zone)
    return moment.timestamp()


def _moment(text: str) -> datetime | None:
    try:
        return _fromisoformat(text)
    except ValueError:
        try:
            return _strptime(text, SEED_TIME_FORMAT)
        except ValueError:
            return None


def parse(
    data: bytes | None,
    *,
    max_bytes: int | None = None,
    received: float | None = None,
    exact_time: bool = False,
    read_time: bool = True,
) -> Record | Invalid:
    """The `Record` that *data* holds, or why it holds none.

    With *exact_time*, a ``Time`` that no parser reads or that has no UTC
    offset makes the bytes `Invalid` too: the shipper then rewrites such a
    record (`logpipe.formats`) rather than index a time Elasticsearch would
    read differently or refuse. With *read_time* False, ``Time`` is checked
    to be a string but not parsed, and the record's `Record.ts` is *received*
    (or now): for paths whose destination never looks at it (the tailer's
    path to Kafka, where the bytes carry the time), the parse is a fifth of
    the per-line cost.

    The record's payload is *data* itself (byte for byte, so its ``Id``
    survives), except that raw CR and LF, which JSON allows only as
    whitespace between tokens, become spaces: one record is one line in a
    spool segment, a file and a bulk body.
    """
    if data is None:
        return Invalid("empty message (no value)")
    if max_bytes is not None and len(data) > max_bytes:
        return Invalid(f"{len(data)} bytes, over the limit of {max_bytes}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return Invalid(f"not JSON: {exc}")
    if type(doc) is not dict:
        return Invalid(f"not a JSON object but {json_type(doc)}")
    record_id = doc.get("Id")
    moment = doc.get("Time")
    if record_id is None or moment is None or "Msg" not in doc:
        return Invalid("missing " + ", ".join(key for key in ("Id", "Msg", "Time") if key not in doc))
    if type(record_id) is not str or not _id_fits(record_id):
        return Invalid(f"Id must be a non-empty string of at most {MAX_ID_BYTES} bytes")
    if type(moment) is not str:
        return Invalid(f"Time must be a string, not {json_type(moment)}")
    if not read_time:
        ts: float | None = None
    elif exact_time:
        exact = _moment(moment)
        if exact is None or exact.tzinfo is None:
            return Invalid(f"Time {moment!r} has no UTC offset" if exact else f"Time {moment!r} is not a time")
        ts = exact.timestamp()
    else:
        ts = parse_time(moment)
    if ts is None:
        ts = time.time() if received is None else received
    return _record(doc, data, record_id, ts)


def _record(doc: dict[str, object], data: bytes, record_id: str, ts: float) -> Record:
    """The `Record` of an accepted KafkaLog object *doc* (`parse` and `kafkalog`): payload *data* with raw CR
    and LF as spaces, ``TraceId`` and ``Service`` when they are strings."""
    if 10 in data or 13 in data:  # LF, CR; an int is looked for with memchr, a bytes needle is ~10x slower
        data = data.replace(b"\n", b" ").replace(b"\r", b" ")
    trace_id = doc.get("TraceId")
    service = doc.get("Service")
    # tuple.__new__: a Record without the named tuple's Python-level __new__
    return _new_record(
        Record,
        (
            record_id,
            ts,
            trace_id if type(trace_id) is str else "",
            service if type(service) is str else "",
            data,
        ),
    )


def _id_fits(record_id: str) -> bool:
    """*record_id* is a non-empty string of at most MAX_ID_BYTES bytes (encoded only when it could be longer)."""
    n = len(record_id)
    return n > 0 and (n <= _ID_SAFE_CHARS or len(record_id.encode()) <= MAX_ID_BYTES)


def kafkalog(data: bytes, received: float) -> Record | None:
    """``parse(data, received=received, read_time=False)`` without the reason: the `Record`, or None when `Invalid`.

    The tailer's per-line test (a line that is a KafkaLog record is sent byte
    for byte), where the reason of a refusal is never shown (the line is
    wrapped instead) and a keyword call, the `Invalid` built for every text
    line that starts with ``{`` and a clock read per line were a third of the
    test's cost. The rules are `parse`'s, line for line (tests/test_ingress.py
    checks that both agree on generated documents): keep them together.
    """
    try:
        doc = _loads(data)
    except _JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    record_id = doc.get("Id")
    if type(record_id) is not str or type(doc.get("Time")) is not str or "Msg" not in doc:
        return None
    if not _id_fits(record_id):
        return None
    return _record(doc, data, record_id, received)


#: C0 controls (but tab) and DEL, shown as ``\\xNN``.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)}


def printable(data: bytes) -> str:
    """*data* as text a terminal and Kibana show as is.

    Invalid UTF-8 becomes ``\\xNN`` escapes (``backslashreplace``), so do
    control characters other than tab; nothing is dropped, and JSON can hold
    the result.
    """
    text = data.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return text.translate(_CONTROLS)


def json_type(value: object) -> str:
    """What kind of JSON value *value* is, for messages."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else type(value).__name__
