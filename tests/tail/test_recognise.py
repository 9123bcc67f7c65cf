"""What the tailer recognises in a line: KafkaLog as is, other programs' JSON mapped, container framing, ids."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import wait_until
from logpipe.exceptions import ConfigError
from logpipe.formats import event_id
from logpipe.record import HOST, WIRE_KEYS, info

from .support import FakeKafka, Running, kafkalog_lines, once, options, registry_offsets, write


def docs(exporter: FakeKafka) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in exporter.payloads()]


def expected_id(path: Path, offset: int) -> str:
    """The Id docs/tail.md promises: event_id(host, dev, ino, CRC32 of the first line, offset)."""
    st = path.stat()
    head = path.read_bytes()[:1024]
    head = head[: head.index(b"\n") + 1] if b"\n" in head else head
    return event_id(HOST, st.st_dev, st.st_ino, f"{zlib.crc32(head):08x}", offset)


# (line, Type, Time, Msg, FuncName, more expected top-level keys)
FORMATS = {
    "zap": (
        b'{"level":"error","ts":1764745267.1,"caller":"project/db.go:88","msg":"query failed","error":"timeout"}',
        ("error", "2025-12-03T07:01:07.100+00:00", "query failed", "project/db.go:88"),
        {},
    ),
    "logrus": (
        b'{"level":"warning","msg":"disk low","time":"2026-01-02T03:04:05+01:00","func":"main.check","file":"m.go:12"}',
        ("warning", "2026-01-02T02:04:05.000+00:00", "disk low", "main.check"),
        {},
    ),
    "slog": (
        b'{"time":"2026-01-02T03:04:05.123-07:00","level":"ERROR","source":{"function":"main.run","file":"/a.go",'
        b'"line":42},"msg":"failed","count":3}',
        ("error", "2026-01-02T10:04:05.123+00:00", "failed", "main.run"),
        {},
    ),
    "pino": (
        b'{"level":50,"time":1764745267100,"pid":1,"hostname":"web-1","name":"api","msg":"request failed"}',
        ("error", "2025-12-03T07:01:07.100+00:00", "request failed", ""),
        {"Service": "api", "Host": "web-1"},
    ),
    "ecs": (
        b'{"@timestamp":"2026-01-01T12:00:00.123Z","log.level":"warn","message":"ecs msg","log":{"logger":"app",'
        b'"origin":{"function":"handle"}},"service":{"name":"shop"},"trace":{"id":"0af7651916cd43dd8448eb211c80319c"}}',
        ("warning", "2026-01-01T12:00:00.123+00:00", "ecs msg", "handle"),
        {"Service": "shop", "TraceId": "0af7651916cd43dd8448eb211c80319c"},
    ),
    "structlog": (
        b'{"event":"user logged in","level":"info","timestamp":"2026-01-02T03:04:05.678Z","func_name":"login"}',
        ("info", "2026-01-02T03:04:05.678+00:00", "user logged in", "login"),
        {},
    ),
    "otel": (
        b'{"timestamp":"2026-01-02T03:04:05Z","severity_text":"WARN","body":"slow","trace_id":"5b8aa5a2d2c872e8321cf37'
        b'308d69df2","span_id":"051581bf3cb55c13"}',
        ("warning", "2026-01-02T03:04:05.000+00:00", "slow", ""),
        {"TraceId": "5b8aa5a2d2c872e8321cf37308d69df2", "SpanId": "051581bf3cb55c13"},
    ),
    "seed": (  # the seed design's Go record: no Id, local time (read in LOGPIPE_TAIL_TIMEZONE, here UTC)
        b'{"Type":"error","Action":"pay","Time":"2026-01-02 03:04:05","Msg":"card declined","Field":{"order":7},'
        b'"FuncName":"pay.Do"}',
        ("error", "2026-01-02T03:04:05.000+00:00", "card declined", "pay.Do"),
        {"Action": "pay"},
    ),
}


class TestJsonFormats:
    @pytest.mark.parametrize("name", sorted(FORMATS))
    def test_a_format_is_mapped_onto_kafkalog(self, tmp_path: Path, name: str) -> None:
        """Level -> Type, time -> Time, message -> Msg, caller -> FuncName; the source in Field.log; a stable Id."""
        line, (type_, time_, msg, func), more = FORMATS[name]
        log = tmp_path / "app.log"
        write(log, [b"first line", line])
        exporter = FakeKafka()
        stats = once(options(tmp_path, "app.log", timezone="UTC"), exporter)
        assert (stats.parsed, stats.wrapped) == (1, 1)
        doc = docs(exporter)[1]
        assert tuple(doc) == WIRE_KEYS
        assert (doc["Type"], doc["Time"], doc["Msg"], doc["FuncName"]) == (type_, time_, msg, func)
        assert {key: doc[key] for key in more} == more
        assert doc["Field"]["log"]["file"] == {"path": str(log)} and doc["Field"]["log"]["offset"] == 11
        assert doc["Id"] == expected_id(log, 11)

    def test_unknown_keys_stay_under_field(self, tmp_path: Path) -> None:
        write(tmp_path / "app.log", [FORMATS["zap"][0], FORMATS["ecs"][0]])
        exporter = FakeKafka()
        once(options(tmp_path, "app.log"), exporter)
        zap, ecs = docs(exporter)
        assert zap["Field"]["error"] == "timeout"
        assert ecs["Field"]["log"]["logger"] == "app"  # ECS's own log.* beside the source

    def test_kafkalog_lines_stay_byte_for_byte_among_others(self, tmp_path: Path) -> None:
        """A KafkaLog line keeps its bytes and Id; JSON of no log format and broken JSON are wrapped as text."""
        own = kafkalog_lines(2)
        write(tmp_path / "app.log", [own[0], b'{"a": 1}', FORMATS["zap"][0], b'{"broken', own[1]])
        exporter = FakeKafka()
        stats = once(options(tmp_path, "app.log"), exporter)
        payloads = exporter.payloads()
        assert (payloads[0], payloads[4]) == (own[0], own[1])
        assert [d["Type"] for d in docs(exporter)] == ["info", "raw", "error", "raw", "info"]
        assert docs(exporter)[1]["Msg"] == '{"a": 1}'
        assert (stats.parsed, stats.wrapped) == (1, 2)

    def test_a_forced_format_per_glob(self, tmp_path: Path) -> None:
        """plain: a JSON line is text (wrapped); the rule names a glob of the file name or path."""
        write(tmp_path / "app.txt", [FORMATS["zap"][0]])
        write(tmp_path / "app.log", [FORMATS["zap"][0]])
        exporter = FakeKafka()
        once(options(tmp_path, "app.*", formats=("*.txt=plain", f"{tmp_path}/*.log=json")), exporter)
        types = {Path(d["Field"]["log"]["file"]["path"]).name: d["Type"] for d in docs(exporter)}
        assert types == {"app.txt": "raw", "app.log": "error"}

    @pytest.mark.parametrize(
        ("setting", "value", "words"),
        [
            ("LOGPIPE_TAIL_FORMATS", "*.log", "not GLOB=FORMAT"),
            ("LOGPIPE_TAIL_FORMATS", "*.log=yaml", "unknown format 'yaml'"),
            ("LOGPIPE_TAIL_MULTILINE", "([", "not a regular expression"),
            ("LOGPIPE_TAIL_TIMEZONE", "Mars/Olympus", "not a time zone"),
        ],
    )
    def test_bad_settings_name_the_variable(self, setting: str, value: str, words: str) -> None:
        from logpipe.tail import load_options

        with pytest.raises(ConfigError, match=f"{setting}.*{words}"):
            load_options(environ={"LOGPIPE_TAIL_PATHS": "a.log", setting: value})


class TestIds:
    def test_ids_are_the_same_when_read_again(self, tmp_path: Path) -> None:
        """A fresh registry (a crash before it was written) reads the same lines again: the same Ids."""
        log = tmp_path / "app.log"
        write(log, [b"plain one", FORMATS["zap"][0], b"plain two"])
        opts = options(tmp_path, "app.log")
        first, second = FakeKafka(), FakeKafka()
        once(opts, first)
        opts.registry.unlink()
        once(opts, second)
        ids = [d["Id"] for d in docs(first)]
        assert ids == [d["Id"] for d in docs(second)] and len(set(ids)) == 3
        assert ids == [expected_id(log, 0), expected_id(log, 10), expected_id(log, 10 + len(FORMATS["zap"][0]) + 1)]

    def test_ids_do_not_change_as_the_file_grows_or_is_renamed(self, tmp_path: Path) -> None:
        """The fingerprint is the first line's: appending, then rotating by rename, keeps every Id."""
        log = tmp_path / "app.log"
        write(log, [b"a"])  # a short first line: shorter than any fixed-size head
        opts = options(tmp_path, "app.log*")
        exporter = FakeKafka()
        once(opts, exporter)
        write(log, [b"b" * 2000, b"c"])
        opts.registry.unlink()
        once(opts, exporter)
        log.rename(tmp_path / "app.log.1")
        opts.registry.unlink()
        once(opts, exporter)
        ids = [d["Id"] for d in docs(exporter)]
        assert ids[0] == ids[1] == ids[4] and ids[2:4] == ids[5:7]

    def test_files_with_the_same_first_line_get_different_ids(self, tmp_path: Path) -> None:
        write(tmp_path / "a.log", [b"starting"])
        write(tmp_path / "b.log", [b"starting"])
        exporter = FakeKafka()
        once(options(tmp_path, "*.log"), exporter)
        assert len({d["Id"] for d in docs(exporter)}) == 2


CRI = [
    b"2026-01-01T12:00:00.123456789Z stdout P first half, ",
    b"2026-01-01T12:00:00.200000000Z stdout F second half",
    b'2026-01-01T12:00:01.000000000Z stderr F {"level":"warn","msg":"json inside","caller":"x.go:1"}',
    b"2026-01-01T12:00:02.000000000Z stdout F ",
    b"2026-01-01T12:00:03.500000000Z stdout F last",
]

DOCKER = [
    b'{"log":"first half, ","stream":"stdout","time":"2026-01-01T12:00:00.123456789Z"}',
    b'{"log":"second half\\n","stream":"stdout","time":"2026-01-01T12:00:00.2Z"}',
    b'{"log":"{\\"level\\":\\"warn\\",\\"msg\\":\\"json inside\\",\\"caller\\":\\"x.go:1\\"}\\n","stream":"stderr",'
    b'"time":"2026-01-01T12:00:01Z"}',
    b'{"log":"\\n","stream":"stdout","time":"2026-01-01T12:00:02Z"}',
    b'{"log":"last\\n","stream":"stdout","time":"2026-01-01T12:00:03.5Z"}',
]


class TestContainerLogs:
    @pytest.mark.parametrize(("lines", "forced"), [(CRI, "cri"), (CRI, None), (DOCKER, "docker"), (DOCKER, None)])
    def test_pieces_joined_content_recognised(self, tmp_path: Path, lines: list[bytes], forced: str | None) -> None:
        """P pieces (or Docker's lines without \\n) joined up to the end; the content is read as any line is."""
        log = tmp_path / "pod.log"
        write(log, lines)
        exporter = FakeKafka()
        formats = (f"*.log={forced}",) if forced else ()  # None: told from the file's first line
        stats = once(options(tmp_path, "pod.log", formats=formats), exporter)
        got = [(d["Type"], d["Time"], d["Msg"], d["FuncName"], d["Field"].get("stream")) for d in docs(exporter)]
        assert got == [
            ("raw", "2026-01-01T12:00:00.123+00:00", "first half, second half", "", "stdout"),
            ("warning", "2026-01-01T12:00:01.000+00:00", "json inside", "x.go:1", "stderr"),
            ("raw", "2026-01-01T12:00:03.500+00:00", "last", "", "stdout"),
        ]
        offsets = [d["Field"]["log"]["offset"] for d in docs(exporter)]
        starts = [sum(len(line) + 1 for line in lines[:i]) for i in (0, 2, 4)]
        assert offsets == starts
        assert [d["Id"] for d in docs(exporter)] == [expected_id(log, o) for o in starts]
        assert (stats.parsed, stats.wrapped) == (1, 2)

    def test_a_partial_line_at_the_end_waits_in_the_registry(self, tmp_path: Path) -> None:
        """P without its F: the registry stays at the P; with the F the whole line is sent once, with the P's Id."""
        log = tmp_path / "pod.log"
        write(log, CRI[:1])
        opts = options(tmp_path, "pod.log", formats=("*.log=cri",), multiline_timeout=60.0)
        exporter = FakeKafka()
        running = Running(opts, exporter)
        try:
            wait_until(lambda: running.tailer.stats.lines_read == 1)
        finally:
            running.stop()
        assert exporter.payloads() == [] and registry_offsets(opts) == {str(log): 0}
        write(log, CRI[1:2])
        once(opts, exporter)
        (doc,) = docs(exporter)
        assert doc["Msg"] == "first half, second half" and doc["Id"] == expected_id(log, 0)


PYTHON = [
    b"2026-01-01 12:00:00 ERROR payment failed",
    b"Traceback (most recent call last):",
    b'  File "/app/pay.py", line 10, in charge',
    b"    card.debit(amount)",
    b"ValueError: card declined",
    b"",
    b"During handling of the above exception, another exception occurred:",
    b"",
    b"Traceback (most recent call last):",
    b'  File "/app/pay.py", line 12, in charge',
    b"KeyError: 'fallback'",
    b"2026-01-01 12:00:01 INFO next request",
]

JAVA = [
    b"2026-01-01 12:00:00 ERROR [main] c.e.Shop - order failed",
    b"java.lang.IllegalStateException: no stock",
    b"\tat com.example.Shop.order(Shop.java:42)",
    b"\tat com.example.Main.main(Main.java:7)",
    b"Caused by: java.io.IOException: disk",
    b"\tat com.example.Store.read(Store.java:9)",
    b"\t... 2 more",
    b"2026-01-01 12:00:01 INFO [main] c.e.Shop - next",
]


class TestMultiline:
    @pytest.mark.parametrize(("lines", "preset"), [(PYTHON, "python"), (JAVA, "java"), (JAVA, r"^\d{4}-\d\d-\d\d ")])
    def test_a_traceback_is_one_record(self, tmp_path: Path, lines: list[bytes], preset: str) -> None:
        """The event's lines joined with \\n (printable each), flagged multiline, the Id of its first line."""
        log = tmp_path / "app.log"
        write(log, lines)
        exporter = FakeKafka()
        stats = once(options(tmp_path, "app.log", multiline=preset), exporter)
        first, second = docs(exporter)
        assert first["Msg"] == "\n".join(line.decode() for line in lines[:-1]).rstrip("\n")
        assert first["Field"]["log"] == {"file": {"path": str(log)}, "offset": 0, "flags": ["multiline"]}
        assert first["Id"] == expected_id(log, 0)
        assert second["Msg"] == lines[-1].decode() and "flags" not in second["Field"]["log"]
        assert (stats.joined, stats.sent) == (1, 2)

    def test_json_lines_between_tracebacks_are_still_recognised(self, tmp_path: Path) -> None:
        own = kafkalog_lines(1)[0]
        write(tmp_path / "app.log", [*PYTHON[:5], own, FORMATS["zap"][0]])
        exporter = FakeKafka()
        once(options(tmp_path, "app.log", multiline="python"), exporter)
        payloads = exporter.payloads()
        assert payloads[1] == own and [d["Type"] for d in docs(exporter)] == ["raw", "info", "error"]

    def test_restart_mid_event_reads_it_again_from_its_first_line(self, tmp_path: Path) -> None:
        """The registry stays at the first line of an incomplete event; after a restart the event is whole, once."""
        log = tmp_path / "app.log"
        write(log, [b"before", *PYTHON[:3]])
        opts = options(tmp_path, "app.log", multiline="python", multiline_timeout=60.0)
        exporter = FakeKafka()
        running = Running(opts, exporter)
        try:
            wait_until(lambda: running.tailer.stats.sent == 1)  # "before", complete once the next event began
        finally:
            running.stop()
        assert registry_offsets(opts) == {str(log): len(b"before\n")}
        write(log, PYTHON[3:])
        once(opts, exporter)
        before, event, nxt = docs(exporter)
        assert event["Msg"].startswith(PYTHON[0].decode()) and event["Msg"].endswith("KeyError: 'fallback'")
        assert event["Id"] == expected_id(log, len(b"before\n"))
        assert registry_offsets(opts) == {str(log): log.stat().st_size}

    def test_the_last_event_of_a_quiet_file_is_sent_after_the_timeout(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        write(log, PYTHON[:5])
        opts = options(tmp_path, "app.log", multiline="python", multiline_timeout=0.3)
        exporter = FakeKafka()
        running = Running(opts, exporter)
        try:
            wait_until(lambda: running.tailer.stats.sent == 1)
            wait_until(lambda: registry_offsets(opts) == {str(log): log.stat().st_size})
        finally:
            running.stop()
        assert docs(exporter)[0]["Msg"].count("\n") == 4

    def test_an_event_over_max_bytes_is_sent_in_parts(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        write(log, [b"start", *[b"  frame %d" % i for i in range(10)], b"next"])
        exporter = FakeKafka()
        once(options(tmp_path, "app.log", multiline="indented", multiline_max_bytes=40), exporter)
        msgs = [d["Msg"] for d in docs(exporter)]
        assert all(len(m.encode()) <= 40 for m in msgs) and len(msgs) > 3
        assert "\n".join(msgs) == "\n".join(["start", *[f"  frame {i}" for i in range(10)], "next"])


def test_wrapped_id_is_the_documented_event_id(tmp_path: Path) -> None:
    """What docs/tail.md promises for an id, checked against an independent computation."""
    log = tmp_path / "app.log"
    payload = info("x", "f").payload
    write(log, [b"x" * 1500, payload, b"text"])
    exporter = FakeKafka()
    once(options(tmp_path, "app.log"), exporter)
    st = os.stat(log)
    first, own, text = docs(exporter)
    crc = f"{zlib.crc32(b'x' * 1024):08x}"  # a first line longer than 1 KiB: its first KiB
    assert first["Id"] == event_id(HOST, st.st_dev, st.st_ino, crc, 0)
    assert own["Id"] == orjson.loads(payload)["Id"]
    assert text["Id"] == event_id(HOST, st.st_dev, st.st_ino, crc, 1501 + len(payload) + 1)
