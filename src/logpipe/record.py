"""The KafkaLog record: its wire shape, its encoding, and helpers that build one.

The wire format is a flat JSON object whose first six keys are the seed design's
``KafkaLog`` struct (``Type, Action, Time, Msg, Field, FuncName``) so the seed's
Logstash pipeline (``codec => json``) reads it unchanged, plus the keys that make
records traceable and de-duplicable downstream (``TraceId, SpanId, Service,
Host, Id``).

Encoding happens once, in the thread that logs, so a record is a snapshot:
mutating a logged object afterwards cannot change what is shipped.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypedDict

import orjson
import uuid_utils

__all__ = [
    "WIRE_KEYS",
    "KafkaLog",
    "Record",
    "decode",
    "encode",
    "error",
    "format_time",
    "info",
    "make_record",
    "new_id",
    "wire_document",
]

#: The keys of every record on the wire, in order.
WIRE_KEYS = (
    "Type",
    "Action",
    "Time",
    "Msg",
    "Field",
    "FuncName",
    "TraceId",
    "SpanId",
    "Service",
    "Host",
    "Id",
)

#: The seed design's ``YYYY-MM-DD HH:MM:SS`` layout (local time).
SEED_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

HOST = socket.gethostname()


class KafkaLog(TypedDict):
    """The decoded wire shape of one log event."""

    Type: str
    Action: str
    Time: str
    Msg: str
    Field: dict[str, Any]
    FuncName: str
    TraceId: str
    SpanId: str
    Service: str
    Host: str
    Id: str


class Record(NamedTuple):
    """One encoded event as it travels from the log call to the exporters.

    ``payload`` is the KafkaLog JSON (no trailing newline). The other fields
    duplicate the few values exporters route on (partition key, header, daily
    index) so that no exporter has to parse the payload again. A named tuple,
    because it is built on every log call and is the cheapest immutable record.
    """

    id: str
    ts: float
    trace_id: str
    service: str
    payload: bytes

    @classmethod
    def from_json(cls, payload: bytes) -> Record:
        """Rebuild a record from its wire JSON, by `logpipe.ingress.parse`'s rules.

        Raises `ValueError` with the reason when *payload* is not a KafkaLog record.
        """
        from .ingress import Invalid, parse  # ingress builds Records: imported late, not at module load

        result = parse(payload)
        if isinstance(result, Invalid):
            raise ValueError(f"not a KafkaLog record: {result.reason}")
        return result

    def decoded(self) -> KafkaLog:
        """The payload as a dict."""
        return decode(self.payload)  # type: ignore[no-any-return]


def new_id() -> str:
    """A unique, time-ordered event id (UUIDv7), the key for downstream dedup."""
    return str(uuid_utils.uuid7())


def format_time(ts: float, fmt: str = "iso", *, utc: bool = True) -> str:
    """Render epoch seconds as the record's ``Time``.

    ``iso`` gives ISO 8601 with milliseconds and a UTC offset; ``seed`` the seed
    design's ``YYYY-MM-DD HH:MM:SS``; anything else is a `strftime` pattern.
    The ``iso`` layout reuses the text of the current second, so the common
    case is one string format instead of a datetime round trip.
    """
    if fmt == "iso":
        return format_iso(ts, utc)
    return _moment(ts, utc).strftime(SEED_TIME_FORMAT if fmt == "seed" else fmt)


def format_iso(ts: float, utc: bool = True) -> str:
    """`format_time`'s ``iso`` layout, without the dispatch on the format (the renderer's path)."""
    second = int(ts // 1)
    cached = _iso_seconds.get(utc)
    if cached is None or cached[0] != second:
        moment = _moment(second, utc)
        offset = moment.strftime("%z")
        cached = (second, moment.strftime("%Y-%m-%dT%H:%M:%S"), f"{offset[:3]}:{offset[3:]}")
        _iso_seconds[utc] = cached  # one atomic store: other threads see old or new, never half
    # + 1 us: epoch seconds as a float hold about 0.2 us; 1764745267.1 is stored as ...267.0999999, which is .100
    return cached[1] + _MILLIS[int((ts - second) * 1000 + 1e-3)] + cached[2]


def _moment(ts: float, utc: bool) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc) if utc else datetime.fromtimestamp(ts).astimezone()


#: By utc flag: (second, "YYYY-MM-DDTHH:MM:SS", "+HH:MM") of the last second rendered.
_iso_seconds: dict[bool, tuple[int, str, str]] = {}
#: ".000" ... ".999", and ".999" again at 1000: a fraction just under 1 can round up when scaled.
_MILLIS = (*(f".{ms:03d}" for ms in range(1000)), ".999")


# --- encoding ---------------------------------------------------------------

_OPTIONS = orjson.OPT_NON_STR_KEYS


def _printable(obj: object) -> object:
    """orjson's fallback: turn what JSON cannot hold into something readable."""
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=_safe_repr)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "backslashreplace")
    if isinstance(obj, BaseException):
        return _clean_text(f"{type(obj).__name__}: {_safe_str(obj)}")
    return _clean_text(_safe_str(obj))


def _clean_text(text: str) -> str:
    """*text* without lone surrogates, which UTF-8 (and so JSON on the wire) cannot hold.

    ``os.fsdecode`` turns undecodable bytes of a file name into surrogates
    U+DC80..U+DCFF (``surrogateescape``): those become the original bytes,
    shown as ``\\xNN``; any other lone surrogate is shown as ``\\uDNNN``.
    Nothing is dropped and a log call never fails on it.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_repr(obj: object) -> str:
    """``repr`` for sorting a set's members; an object whose repr raises sorts by its type."""
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__name__}>"


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:
        try:
            return repr(obj)
        except Exception:
            return f"<unprintable {type(obj).__name__}>"


def encode(doc: Mapping[str, Any]) -> bytes:
    """Encode *doc* as compact JSON, never raising and never dropping a value.

    The fast path is one ``orjson.dumps``. Values orjson refuses (integers past
    64 bits, cycles, strings with lone surrogates) or silently turns into
    ``null`` (NaN, infinities) send the document through `_sanitize` first; the
    ``null`` scan keeps that check nearly free for the common case.
    """
    try:
        # OPT_NON_STR_KEYS takes orjson's slower dict path (~35% of the dumps); try without it,
        # a non-str key raises TypeError and gets it below.
        out = orjson.dumps(doc, default=_printable)
    except TypeError:
        try:
            out = orjson.dumps(doc, default=_printable, option=_OPTIONS)
        except TypeError:
            return orjson.dumps(_sanitize(doc, set()), default=_printable, option=_OPTIONS)
    if b"null" in out and _has_non_finite(doc):
        return orjson.dumps(_sanitize(doc, set()), default=_printable, option=_OPTIONS)
    return out


def decode(payload: bytes | str) -> Any:
    """Parse JSON; raises `ValueError` on malformed input."""
    return orjson.loads(payload)


def _has_non_finite(value: object, depth: int = 0) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth > 64:
        return False
    if isinstance(value, Mapping):
        return any(_has_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v, depth + 1) for v in value)
    return False


def _sanitize(value: object, seen: set[int]) -> object:
    """Deep copy of *value* that plain JSON can hold; cycles become markers, lone surrogates escapes."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        if id(value) in seen:
            return f"<cycle {type(value).__name__}>"
        seen = seen | {id(value)}
        if isinstance(value, Mapping):
            return {_key(k): _sanitize(v, seen) for k, v in value.items()}
        items = sorted(value, key=_safe_repr) if isinstance(value, (set, frozenset)) else value
        return [_sanitize(v, seen) for v in items]
    return value


def _key(key: object) -> object:
    if isinstance(key, str):
        return _clean_text(key)
    if isinstance(key, int) and not isinstance(key, bool) and not -(2**63) <= key < 2**64:
        return str(key)
    return key if isinstance(key, (int, float, bool)) or key is None else _clean_text(_safe_str(key))


# --- building records directly ----------------------------------------------


def make_record(
    *,
    type: str,
    msg: str,
    func_name: str = "",
    fields: Mapping[str, Any] | None = None,
    action: str = "click",
    trace_id: str = "",
    span_id: str = "",
    service: str = "",
    time_format: str = "iso",
    ts: float | None = None,
) -> Record:
    """Build and encode one KafkaLog record; the processor chain ends here too."""
    ts = time.time() if ts is None else ts
    record_id = new_id()
    time_text = format_time(ts, time_format)
    fields = dict(fields or {})
    doc = wire_document(type, action, time_text, msg, fields, func_name, trace_id, span_id, service, record_id)
    return Record(record_id, ts, trace_id, service, encode(doc))


def wire_document(
    type: str,
    action: str,
    time_text: str,
    msg: str,
    fields: Mapping[str, Any],
    func_name: str,
    trace_id: str,
    span_id: str,
    service: str,
    record_id: str,
) -> dict[str, Any]:
    """The KafkaLog dict in wire order (`WIRE_KEYS`); positional for the per-call path."""
    return {
        "Type": type,
        "Action": action,
        "Time": time_text,
        "Msg": msg,
        "Field": fields,
        "FuncName": func_name,
        "TraceId": trace_id,
        "SpanId": span_id,
        "Service": service,
        "Host": HOST,
        "Id": record_id,
    }


def error(err: BaseException | str, func_name: str, fields: Mapping[str, Any] | None = None, **kw: Any) -> Record:
    """The seed's ``Error(err, funcName, fieldMap)``: an ``error`` record from an exception."""
    return make_record(type="error", msg=str(err), func_name=func_name, fields=fields, **kw)


def info(msg: str, func_name: str, fields: Mapping[str, Any] | None = None, **kw: Any) -> Record:
    """The seed's ``Info(msg, funcName, fieldMap)``: an ``info`` record."""
    return make_record(type="info", msg=msg, func_name=func_name, fields=fields, **kw)
