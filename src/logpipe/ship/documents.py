"""What a Kafka message becomes in Elasticsearch: any message of a mixed fleet, indexed once.

The seed's Logstash (``codec => json``) indexed whatever JSON the fleet
wrote; a shipper meant to replace it must too. So:

* a logpipe record (a KafkaLog object with ``Id``, ``Msg`` and a ``Time``
  with a UTC offset) is indexed byte for byte, ``_id`` = its ``Id``: the fast
  path, and the one logpipe's own producers always take;
* any other JSON object (the seed's Go services: no ``Id``, ``Time`` in a
  local zone; zap, logrus, slog, pino, ECS ...) is mapped onto the KafkaLog
  keys by `logpipe.formats.normalize`; a ``Time`` without an offset is read
  in ``LOGPIPE_SHIP_DEFAULT_TIMEZONE``, a missing or unreadable one becomes
  the Kafka message timestamp (the original kept in ``Field.time_original``);
* anything else (not JSON, a JSON array or string, an empty value) becomes a
  text record: ``Type`` ``raw``, ``Msg`` the bytes made printable, the
  message's coordinates in ``Field.kafka``.

A message that brings no ``Id`` gets ``topic+partition+offset`` (the Kafka
Connect Elasticsearch sink's rule), so consuming it again after a crash or a
rebalance is a 409, never a second document. Only what is over
``max_message_bytes`` is refused here (dead-lettered); what Elasticsearch
refuses is dead-lettered by the shipper.
"""

from __future__ import annotations

import time
from datetime import tzinfo

import orjson

from .. import formats, ingress
from ..record import Record, encode, format_iso, wire_document
from ..redact import Redactor
from .consumer import Message

__all__ = ["document"]

#: ``Type`` and ``Action`` of a message that is not a JSON object.
RAW_TYPE = "raw"
ACTION = "ship"


def document(
    message: Message, limit: int, zone: tzinfo | None, redactor: Redactor | None = None
) -> Record | ingress.Invalid:
    """The record to index for *message*, or why it cannot be (over *limit* bytes).

    With *redactor*, secrets in what the shipper maps or wraps are masked
    (logpipe's own records were masked where they were made, and pass as they are).
    """
    value = message.value
    if value is not None and len(value) > limit:
        return ingress.Invalid(f"{len(value)} bytes, over the limit of {limit}")
    # With exact_time, a record's time is its Time or the bytes are not a record: no receive time needed.
    found = ingress.parse(value, exact_time=True)
    if isinstance(found, Record):
        return found
    received = _received(message)
    record_id = formats.coordinates_id(message.topic, message.partition, message.offset)
    doc = _object(value)
    if doc is None:
        return _text(value or b"", message, received, record_id, redactor)
    out, ts = formats.normalize(doc, received=received, record_id=record_id, zone=zone, action=ACTION, host="")
    if redactor is not None:
        out = redactor.document(out) or out
    return Record(out["Id"], ts, out["TraceId"], out["Service"], encode(out))


def _received(message: Message) -> float:
    """The message's Kafka timestamp in epoch seconds (the moment it was produced), else now."""
    stamp = message.timestamp
    return stamp / 1000 if stamp is not None and stamp > 0 else time.time()


def _object(value: bytes | None) -> dict[str, object] | None:
    if not value or value[:1] not in (b"{", b" ", b"\t", b"\r", b"\n"):
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _text(value: bytes, message: Message, received: float, record_id: str, redactor: Redactor | None) -> Record:
    source = {"kafka": {"topic": message.topic, "partition": message.partition, "offset": message.offset}}
    msg = ingress.printable(value)
    if redactor is not None:
        msg = redactor.text(msg)
    doc = wire_document(RAW_TYPE, ACTION, format_iso(received), msg, source, "", "", "", "", record_id)
    doc["Host"] = ""  # not the shipper's machine: where the bytes came from is unknown
    return Record(record_id, received, "", "", encode(doc))
