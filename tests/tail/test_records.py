"""logpipe.tail.records: a line -> the record sent for it (KafkaLog as is, anything else wrapped)."""

from __future__ import annotations

import socket
import uuid

import orjson
import pytest

from logpipe.record import WIRE_KEYS, info
from logpipe.tail import kafkalog_record, printable, wrap_line


class TestRecords:
    def test_kafkalog_line_is_sent_byte_for_byte(self) -> None:
        """What the file exporter writes keeps its bytes, its Id and its routing values."""
        record = info("hi", "app.f", {"user": 1}, trace_id="ab" * 16, service="shop")
        found = kafkalog_record(record.payload)
        assert found is not None
        assert found.payload is record.payload
        assert (found.id, found.trace_id, found.service) == (record.id, record.trace_id, "shop")
        assert found.ts == pytest.approx(record.ts, abs=0.001)

    @pytest.mark.parametrize(
        "line",
        [
            b"plain text",
            b'{"Type":"info","Msg":"x"',  # cut off
            b'{"level":"info","msg":"another program"}',  # JSON, not KafkaLog
            b'{"Id":"","Time":"t","Msg":"x"}',  # empty Id
            b'{"Id":"a","Time":5,"Msg":"x"}',  # Time not a string
            b'{"Id":"' + b"x" * 600 + b'","Time":"t","Msg":"x"}',  # Id too long for Elasticsearch
            b"[1,2,3]",
            b"\x00\x01\xff\xfe garbage",
        ],
    )
    def test_anything_else_is_not_kafkalog(self, line: bytes) -> None:
        assert kafkalog_record(line) is None

    def test_wrapped_line(self) -> None:
        """A wrapped line is a full KafkaLog record: raw type, the text, where it came from, a new UUIDv7."""
        record = wrap_line(b"disk \xff full\x07", "/var/log/app.log", 1234, service="billing")
        doc = orjson.loads(record.payload)
        assert tuple(doc) == WIRE_KEYS
        assert (doc["Type"], doc["Action"], doc["Service"]) == ("raw", "tail", "billing")
        assert doc["Msg"] == "disk \\xff full\\x07"
        assert doc["Field"] == {"log": {"file": {"path": "/var/log/app.log"}, "offset": 1234}}
        assert uuid.UUID(doc["Id"]).version == 7 and record.id == doc["Id"]
        assert doc["Host"] == socket.gethostname()
        assert kafkalog_record(record.payload) is not None  # what the shipper will index

    def test_printable_keeps_text_and_tabs(self) -> None:
        assert printable("café\tüber".encode()) == "café\tüber"
        assert printable(b"a\x1b[31mred") == "a\\x1b[31mred"
