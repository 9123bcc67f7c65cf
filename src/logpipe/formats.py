"""Other producers' JSON log lines mapped onto the KafkaLog keys, so search and Kibana see one schema.

A fleet is mixed: Go services built to the seed design (KafkaLog without
``Id``, ``Time`` in local time), zap, logrus and slog JSON, structlog JSON,
pino and bunyan, ECS (``@timestamp``, ``log.level``, ``message``), the
OpenTelemetry SDK's JSON. `normalize` recognises each by its keys and maps

==============  ======================================================================
KafkaLog        taken from
==============  ======================================================================
``Type``        level: ``level``, ``severity``, ``log.level``, ``severity_text``, pino's numbers
``Time``        ``Time``, ``time``, ``ts``, ``timestamp``, ``@timestamp`` (ISO text, or epoch
                seconds / milliseconds / nanoseconds)
``Msg``         ``Msg``, ``msg``, ``message``, ``event``, ``body``
``FuncName``    ``FuncName``, ``caller`` (zap), ``func`` (logrus), ``source.function`` (slog),
                ``log.origin.function`` (ECS), ``func_name``
``TraceId``     ``TraceId``, ``trace_id``, ``trace.id``, ``traceId``
``SpanId``      ``SpanId``, ``span_id``, ``span.id``, ``spanId``
``Service``     ``Service``, ``service``, ``service.name``, ``name`` (pino/bunyan), ``logger``
``Host``        ``Host``, ``host``, ``hostname``, ``host.hostname``
==============  ======================================================================

and keeps every other key under ``Field``. Levels are made logpipe's words
(``warn`` -> ``warning``, ``fatal``/``panic`` -> ``critical``, pino's 50 ->
``error``). A ``Time`` that is missing or that no parser reads becomes the
*received* time (the Kafka message timestamp, the moment a line was read)
and the original value is kept as ``Field.time_original``; a time without an
offset is read in *zone*. Nothing is dropped.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from datetime import tzinfo
from typing import Any

import uuid_utils

from .ingress import MAX_ID_BYTES, parse_time
from .record import format_iso, wire_document

__all__ = ["LEVELS", "coordinates_id", "event_id", "event_ids", "normalize", "normalize_level", "time_of"]

#: The namespace of the UUIDv5 ids `event_id` derives (fixed: the same event gets the same id everywhere).
ID_NAMESPACE = uuid.UUID("7d3c3a4e-58b1-5b8e-9a57-3f0c1d1e6a10")
# uuid_utils' uuid5 gives the same UUIDs as the stdlib's, ten times faster (the tailer makes one per line).
_NAMESPACE = uuid_utils.UUID(str(ID_NAMESPACE))
_uuid5 = uuid_utils.uuid5

#: Level words of other libraries -> logpipe's ``Type``.
LEVELS = {
    "trace": "trace",
    "debug": "debug",
    "dbg": "debug",
    "info": "info",
    "information": "info",
    "notice": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "err": "error",
    "crit": "critical",
    "critical": "critical",
    "fatal": "critical",
    "panic": "critical",
    "dpanic": "critical",
    "alert": "critical",
    "emerg": "critical",
}

#: pino / bunyan numeric levels.
_NUMERIC = {10: "trace", 20: "debug", 30: "info", 40: "warning", 50: "error", 60: "critical"}

# Candidate keys, most specific first; dotted names are looked up flat ("log.level") and nested.
_TYPE_KEYS = ("Type", "level", "severity", "log.level", "severity_text", "lvl", "levelname")
_TIME_KEYS = ("Time", "@timestamp", "time", "ts", "timestamp", "t")
_MSG_KEYS = ("Msg", "msg", "message", "event", "body", "log")
_FUNC_KEYS = ("FuncName", "caller", "func", "source.function", "log.origin.function", "func_name", "funcName")
_TRACE_KEYS = ("TraceId", "trace_id", "trace.id", "traceId", "traceid")
_SPAN_KEYS = ("SpanId", "span_id", "span.id", "spanId", "spanid")
_SERVICE_KEYS = ("Service", "service.name", "service", "name", "logger")
_HOST_KEYS = ("Host", "host", "hostname", "host.hostname", "host.name")


def normalize(
    doc: Mapping[str, Any],
    *,
    received: float,
    record_id: str,
    zone: tzinfo | None = None,
    action: str = "log",
    service: str = "",
    host: str | None = None,
) -> tuple[dict[str, Any], float]:
    """The KafkaLog document for a foreign JSON object *doc*, and its time in epoch seconds.

    *record_id* becomes ``Id`` unless *doc* has a usable one; *service* and
    *host* are the defaults when *doc* names none (*host* None: this machine,
    right for a file read here; the shipper passes "", it cannot know).
    """
    rest = dict(doc)
    level = _take(rest, _TYPE_KEYS)
    moment = _take(rest, _TIME_KEYS)
    msg = _take(rest, _MSG_KEYS)
    if msg is None and isinstance(rest.get("body"), (Mapping, list)):
        msg = rest.pop("body")
    func = _take(rest, _FUNC_KEYS)
    trace_id = _take(rest, _TRACE_KEYS)
    span_id = _take(rest, _SPAN_KEYS)
    own_service = _take(rest, _SERVICE_KEYS)
    own_host = _take(rest, _HOST_KEYS)
    own_action = rest.pop("Action", None)
    own_id = rest.pop("Id", None)
    field = rest.pop("Field", None)
    if isinstance(field, Mapping):
        rest = {**field, **rest}
    elif field is not None:
        rest["Field"] = field
    ts = time_of(moment, zone)
    if ts is None:
        ts = received
        if moment is not None:
            rest["time_original"] = moment
    if isinstance(msg, (Mapping, list)):  # a structured body (OpenTelemetry): keep it whole
        rest["body"] = msg
        msg = msg.get("message", "") if isinstance(msg, Mapping) else ""
    out = wire_document(
        normalize_level(level),
        str(own_action) if own_action else action,
        format_iso(ts),
        "" if msg is None else str(msg),
        rest,
        _function(func),
        _hex_id(trace_id),
        _hex_id(span_id),
        str(own_service) if own_service else service,
        own_id if isinstance(own_id, str) and own_id and len(own_id.encode()) <= MAX_ID_BYTES else record_id,
    )
    if own_host:
        out["Host"] = str(own_host)
    elif host is not None:
        out["Host"] = host
    return out, ts


def coordinates_id(topic: str, partition: int, offset: int) -> str:
    """The ``_id`` of a message that brings none: Kafka Connect's Elasticsearch sink rule ``topic+partition+offset``.

    The same message consumed again (a crash, a rebalance) gets the same id,
    so it is one document, never two.
    """
    return f"{topic}+{partition}+{offset}"


def event_id(*identity: object) -> str:
    """A stable UUIDv5 from the parts that identify an event (host, file identity, byte offset ...)."""
    return str(_uuid5(_NAMESPACE, "/".join(map(str, identity))))


def event_ids(*identity: object) -> Callable[[object], str]:
    """``last -> event_id(*identity, last)``: the ids of many events sharing all but their last part, fast.

    The tailer's per-line ids (`logpipe.tail`): the file's identity is
    joined once, only the byte offset changes.
    """
    prefix = "".join(f"{part}/" for part in identity)
    namespace, uuid5 = _NAMESPACE, _uuid5
    return lambda last: str(uuid5(namespace, f"{prefix}{last}"))


def normalize_level(level: Any) -> str:
    """Another library's level (a word in any case, or a pino number) as logpipe's ``Type``."""
    if level is None:
        return "info"
    if isinstance(level, (int, float)) and not isinstance(level, bool):
        return _NUMERIC.get(int(level) // 10 * 10, "info")
    text = str(level).strip().lower()
    return LEVELS.get(text, text or "info")


def time_of(value: Any, zone: tzinfo | None = None) -> float | None:
    """Epoch seconds of a time value: ISO text (via `logpipe.ingress.parse_time`) or epoch s / ms / ns."""
    if isinstance(value, str):
        parsed = parse_time(value, zone)
        if parsed is not None:
            return parsed
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    if value > 1e17:
        value /= 1e9  # nanoseconds
    elif value > 1e14:
        value /= 1e6  # microseconds
    elif value > 1e11:
        value /= 1e3  # milliseconds
    return float(value) if value < 253402300800 else None  # before the year 10000


def _take(doc: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """Remove and return the first scalar found under *keys* (dotted names: flat, or nested objects).

    Objects are passed over (ECS's ``log`` object is not a message, nor
    ``service`` one a name); a nested object emptied by the removal goes too.
    """
    for key in keys:
        value = doc.get(key)
        if value is not None and not isinstance(value, Mapping):
            return doc.pop(key)
        if "." in key:
            found = _take_path(doc, key.split("."))
            if found is not None:
                return found
    return None


def _take_path(doc: dict[str, Any], path: list[str]) -> Any:
    head, rest = path[0], path[1:]
    inner = doc.get(head)
    if not rest:
        return None if inner is None or isinstance(inner, Mapping) else doc.pop(head)
    if not isinstance(inner, Mapping):
        return None
    inner = dict(inner)
    found = _take_path(inner, rest)
    if found is not None:
        if inner:
            doc[head] = inner
        else:
            del doc[head]
    return found


def _function(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):  # slog's source object came whole
        return str(value.get("function", ""))
    return str(value)


def _hex_id(value: Any) -> str:
    if not value:
        return ""
    text = str(value)
    return text[2:] if text.startswith("0x") else text
