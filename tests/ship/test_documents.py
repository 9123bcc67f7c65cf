"""Tests for logpipe.ship.documents: any message of a mixed fleet becomes one document."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from fakes import FakeMessage

from logpipe import ingress
from logpipe.record import Record, make_record
from logpipe.ship.documents import document
from logpipe.ship.options import zone

STAMP_MS = int(datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)


def message(value: bytes | None, offset: int = 41) -> FakeMessage:
    return FakeMessage("logs", 2, offset, STAMP_MS, None, value, [], None)


def doc_of(value: bytes | None, tz: timezone | None = timezone.utc) -> tuple[Record, dict]:  # type: ignore[type-arg]
    result = document(message(value), 1 << 20, tz)
    assert isinstance(result, Record)
    return result, orjson.loads(result.payload)


def test_a_logpipe_record_is_indexed_byte_for_byte() -> None:
    record = make_record(type="info", msg="hi")
    result, _ = doc_of(record.payload)
    assert result.payload == record.payload and result.id == record.id


def test_a_seed_record_without_id_in_its_services_zone() -> None:
    """The seed's Go services: no Id, Time in local time; Id from the coordinates, Time read in the zone."""
    seed = {
        "Type": "error",
        "Action": "click",
        "Time": "2026-12-03 16:00:00",
        "Msg": "db down",
        "Field": {"err": "timeout"},
        "FuncName": "db.Query",
    }
    result, doc = doc_of(orjson.dumps(seed), timezone(timedelta(hours=8)))
    assert result.id == doc["Id"] == "logs+2+41"
    assert (doc["Time"], doc["Type"], doc["Field"], doc["FuncName"]) == (
        "2026-12-03T08:00:00.000+00:00",
        "error",
        {"err": "timeout"},
        "db.Query",
    )


def test_an_unreadable_time_becomes_the_message_timestamp_and_is_kept() -> None:
    record = orjson.loads(make_record(type="info", msg="m").payload)
    record["Time"] = "1999-13-45 99:99:99"
    result, doc = doc_of(orjson.dumps(record))
    assert result.id == record["Id"]  # its own Id survives the rewrite
    assert doc["Time"] == "2026-12-03T08:00:00.000+00:00" and doc["Field"]["time_original"] == "1999-13-45 99:99:99"


def test_zap_json() -> None:
    line = b'{"level":"error","ts":1764745267.1,"caller":"project/db.go:88","msg":"query failed","error":"x"}'
    _, doc = doc_of(line)
    assert (doc["Type"], doc["Msg"], doc["FuncName"], doc["Id"]) == (
        "error",
        "query failed",
        "project/db.go:88",
        "logs+2+41",
    )


@pytest.mark.parametrize("value", [b"\xff\xfe plain text\x1b", b"[1, 2]", b'"a string"', b"", None])
def test_anything_else_is_a_text_record(value: bytes | None) -> None:
    result, doc = doc_of(value)
    assert (doc["Type"], doc["Action"], doc["Id"], doc["Host"]) == ("raw", "ship", "logs+2+41", "")
    assert doc["Field"] == {"kafka": {"topic": "logs", "partition": 2, "offset": 41}}
    assert doc["Time"] == "2026-12-03T08:00:00.000+00:00"
    if value:
        assert doc["Msg"] == ingress.printable(value)


def test_only_oversize_is_refused() -> None:
    result = document(message(b"x" * 100), 10, timezone.utc)
    assert isinstance(result, ingress.Invalid) and "over the limit of 10" in result.reason


def test_zone_names() -> None:
    assert zone("UTC") is timezone.utc and zone("local") is None
    assert zone("Asia/Shanghai").utcoffset(datetime(2026, 1, 1)) == timedelta(hours=8)  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        zone("Mars/Olympus")
