"""Tests for logpipe.deadletter: one format, one writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logpipe import deadletter
from logpipe.deadletter import DeadLetter, FileDeadLetters


def test_file_entries_keep_reason_source_and_original_bytes(tmp_path: Path) -> None:
    path = tmp_path / "dl" / "dead.jsonl"
    letters = [
        DeadLetter(
            b'{"Id":"1"}',
            "refused: mapper_parsing_exception",
            {"topic": "t", "partition": 2, "offset": 9},
            status=400,
            index="logpipe-2026.12.03",
            key=b"svc",
        ),
        DeadLetter(b"\xff\xfe not utf-8", "not JSON", {"path": "/var/log/a.log", "offset": 120}),
    ]
    FileDeadLetters(path).write(letters)
    first, second = deadletter.read(path)
    assert first["reason"] == "refused: mapper_parsing_exception" and first["status"] == 400
    assert first["source"] == {"topic": "t", "partition": 2, "offset": 9} and first["key"] == "svc"
    assert deadletter.original(first) == b'{"Id":"1"}'
    assert "value" not in second and deadletter.original(second) == b"\xff\xfe not utf-8"
    assert second["source"]["path"] == "/var/log/a.log"


def test_a_write_that_fails_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = FileDeadLetters(blocker / "dead.jsonl", "LOGPIPE_SHIP_DEAD_LETTER")
    with pytest.raises(OSError, match="LOGPIPE_SHIP_DEAD_LETTER"):
        writer.write([DeadLetter(b"x", "r")])


def test_kafka_headers_carry_reason_and_source() -> None:
    letter = DeadLetter(b"x", "too large", {"topic": "logs", "partition": 1, "offset": 5}, status=413)
    headers = dict(deadletter.kafka_headers(letter))
    assert headers == {
        "logpipe.dlq.reason": b"too large",
        "logpipe.dlq.topic": b"logs",
        "logpipe.dlq.partition": b"1",
        "logpipe.dlq.offset": b"5",
        "logpipe.dlq.status": b"413",
    }


def test_nothing_to_write_creates_nothing(tmp_path: Path) -> None:
    FileDeadLetters(tmp_path / "none.jsonl").write([])
    assert not os.path.exists(tmp_path / "none.jsonl")
