"""logpipe tail: lines -> records, the registry, files (rotation, truncation), failures, and the real broker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from conftest import REPO, Service, consume_all, wait_until
from logpipe.cli import main
from logpipe.exceptions import ConfigError
from logpipe.exporters.base import Exporter, ExportResult, PartialFailure, Pending
from logpipe.exporters.kafka import KafkaExporter, KafkaOptions
from logpipe.record import WIRE_KEYS, Record, info
from logpipe.tail import (
    Registry,
    RegistryEntry,
    Tailer,
    TailOptions,
    TailStats,
    kafkalog_record,
    load_options,
    printable,
    wrap_line,
)

# -- helpers ------------------------------------------------------------------------------


class FakeKafka(Exporter):
    """Keeps batches in flight like the Kafka exporter (delivery happens at ``wait``); can fail or refuse."""

    max_in_flight = 3

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []
        self.fail = False
        #: Records whose payload contains one of these are refused (PartialFailure), as too large ones are.
        self.refuse: set[bytes] = set()
        self.outstanding = 0
        self.most_outstanding = 0
        self.calls = 0
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Record]) -> ExportResult | PartialFailure:
        with self._lock:
            self.calls += 1
            if self.fail:
                return ExportResult.FAILURE
            refused = [r for r in batch if any(s in r.payload for s in self.refuse)]
            self.records.extend(r for r in batch if r not in refused)
        return PartialFailure(refused) if refused else ExportResult.SUCCESS

    def begin(self, batch: Sequence[Record]) -> Pending:
        self.outstanding += 1
        self.most_outstanding = max(self.most_outstanding, self.outstanding)
        return _Later(self, list(batch))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [r.payload for r in self.records]


class _Later:
    def __init__(self, exporter: FakeKafka, batch: list[Record]) -> None:
        self.exporter, self.batch = exporter, batch

    def wait(self) -> ExportResult | PartialFailure:
        self.exporter.outstanding -= 1
        return self.exporter.export(self.batch)


def options(tmp_path: Path, *patterns: str, **overrides: Any) -> TailOptions:
    settings: dict[str, Any] = {
        "paths": tuple(str(tmp_path / p) for p in patterns) or (str(tmp_path / "*.log*"),),
        "registry": tmp_path / "state" / "registry.json",
        "dead_letter": tmp_path / "state" / "dead.jsonl",
        "scan_interval": 0.05,
        "poll_interval": 0.01,
        "close_rotated": 0.2,
        "backoff": 0.05,
        "max_backoff": 0.2,
        "registry_flush": 0.0,
    }
    settings.update(overrides)
    return load_options(settings, environ={})


def once(opts: TailOptions, exporter: Exporter) -> TailStats:
    return Tailer(opts, exporter, once=True).run()


class Running:
    """A follow-mode Tailer in a thread."""

    def __init__(self, opts: TailOptions, exporter: Exporter) -> None:
        self.tailer = Tailer(opts, exporter)
        self.result: TailStats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.tailer.run()

    def stop(self) -> TailStats:
        self.tailer.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.result is not None
        return self.result


def kafkalog_lines(n: int, start: int = 0) -> list[bytes]:
    return [info(f"event {i}", "app.handler", {"i": i}).payload for i in range(start, start + n)]


def write(path: Path, lines: Sequence[bytes], mode: str = "ab") -> None:
    with path.open(mode) as out:
        out.write(b"".join(line + b"\n" for line in lines))


def registry_offsets(opts: TailOptions) -> dict[str, int]:
    return {e.path: e.offset for e in Registry(opts.registry).load().entries.values()}


# -- lines -> records ---------------------------------------------------------------------


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


# -- the registry ---------------------------------------------------------------------------


class TestRegistry:
    def test_round_trip_and_atomic_replace(self, tmp_path: Path) -> None:
        registry = Registry(tmp_path / "r" / "registry.json")
        registry.entries[(1, 2)] = RegistryEntry(1, 2, "/a.log", 10, head=99, head_len=10)
        registry.entries[(1, 3)] = RegistryEntry(1, 3, "/b.log", 0)
        registry.save()
        assert sorted(os.listdir(tmp_path / "r")) == ["registry.json"]  # the temp file was renamed
        again = Registry(registry.path).load()
        assert again.entries == registry.entries
        doc = orjson.loads(registry.path.read_bytes())
        assert doc["version"] == 1 and {f["path"] for f in doc["files"]} == {"/a.log", "/b.log"}

    def test_missing_registry_is_empty(self, tmp_path: Path) -> None:
        assert Registry(tmp_path / "none.json").load().entries == {}

    def test_unreadable_registry_names_the_variable(self, tmp_path: Path) -> None:
        path = tmp_path / "registry.json"
        path.write_text("{not json")
        with pytest.raises(ConfigError, match="LOGPIPE_TAIL_REGISTRY"):
            Registry(path).load()


class TestOptions:
    def test_from_the_environment(self) -> None:
        opts = load_options(environ={"LOGPIPE_TAIL_PATHS": "a.log,b/*.log", "LOGPIPE_TAIL_START": "end"})
        assert opts.paths == ("a.log", "b/*.log") and opts.start == "end"

    @pytest.mark.parametrize(
        ("env", "words"),
        [
            ({"LOGPIPE_TAIL_BATCH_SIZE": "0"}, "LOGPIPE_TAIL_BATCH_SIZE"),
            ({"LOGPIPE_TAIL_START": "middle"}, "LOGPIPE_TAIL_START"),
            ({"LOGPIPE_TAIL_BACKOFF": "5", "LOGPIPE_TAIL_MAX_BACKOFF": "1"}, "LOGPIPE_TAIL_MAX_BACKOFF"),
        ],
    )
    def test_bad_values_name_the_variable(self, env: dict[str, str], words: str) -> None:
        with pytest.raises(ConfigError, match=words):
            load_options(environ={"LOGPIPE_TAIL_PATHS": "a.log", **env})

    def test_nothing_to_follow(self) -> None:
        with pytest.raises(ConfigError, match="LOGPIPE_TAIL_PATHS"):
            load_options(environ={})


# -- files ----------------------------------------------------------------------------------


class TestFiles:
    def test_lines_split_partial_last_line_waits(self, tmp_path: Path) -> None:
        """CRLF and LF lines, an empty line skipped, and half a line held back until its newline comes."""
        log = tmp_path / "app.log"
        log.write_bytes(b"one\r\n\ntwo\nthr")
        opts = options(tmp_path, "app.log")
        exporter = FakeKafka()
        stats = once(opts, exporter)
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == ["one", "two"]
        assert (stats.lines_read, stats.sent, stats.wrapped, stats.empty) == (3, 2, 2, 1)
        assert registry_offsets(opts) == {str(log): len(b"one\r\n\ntwo\n")}
        with log.open("ab") as out:
            out.write(b"ee\n")
        once(opts, exporter)
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == ["one", "two", "three"]
        assert orjson.loads(exporter.payloads()[2])["Field"]["log"]["offset"] == len(b"one\r\n\ntwo\n")

    def test_long_lines_are_split_and_counted(self, tmp_path: Path) -> None:
        """Pieces of max_line_bytes, flagged, with their offsets; even a long line still being written."""
        log = tmp_path / "app.log"
        log.write_bytes(b"a" * 40 + b"\nshort\n" + b"b" * 20)
        exporter = FakeKafka()
        opts = options(tmp_path, "app.log", max_line_bytes=16)
        stats = once(opts, exporter)
        docs = [orjson.loads(p) for p in exporter.payloads()]
        assert [d["Msg"] for d in docs] == ["a" * 16, "a" * 16, "a" * 8, "short", "b" * 16]
        assert [d["Field"]["log"]["offset"] for d in docs] == [0, 16, 32, 41, 47]
        assert [d["Field"]["log"].get("flags") for d in docs] == [["split"]] * 3 + [None, ["split"]]
        assert stats.too_long == 2
        assert registry_offsets(opts) == {str(log): 47 + 16}  # the rest of the b line waits for its end

    def test_restart_resumes_from_the_registry(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        first, second = kafkalog_lines(50), kafkalog_lines(30, 50)
        write(log, first)
        exporter = FakeKafka()
        opts = options(tmp_path, "app.log", batch_size=7)
        assert once(opts, exporter).sent == 50
        write(log, second)
        stats = once(opts, exporter)
        assert stats.sent == 30 and stats.wrapped == 0
        assert exporter.payloads() == first + second
        assert 1 < exporter.most_outstanding <= FakeKafka.max_in_flight  # batches were pipelined

    def test_start_end_skips_what_is_there(self, tmp_path: Path) -> None:
        """--start end: files known at start begin at their end; a file appearing later from its start."""
        old = tmp_path / "old.log"
        write(old, [b"before"])
        exporter = FakeKafka()
        running = Running(options(tmp_path, "*.log", start="end"), exporter)
        try:
            wait_until(lambda: running.tailer.stats.files_open == 1)
            write(old, [b"after"])
            write(tmp_path / "new.log", [b"new file"])
            wait_until(lambda: running.tailer.stats.sent == 2)
        finally:
            running.stop()
        assert sorted(orjson.loads(p)["Msg"] for p in exporter.payloads()) == ["after", "new file"]

    def test_truncated_file_is_read_again_from_the_start(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        write(log, [b"one", b"two", b"three"])
        exporter = FakeKafka()
        running = Running(options(tmp_path, "app.log"), exporter)
        try:
            wait_until(lambda: running.tailer.stats.sent == 3)
            write(log, [b"new"], mode="wb")  # truncate and write less than was there
            wait_until(lambda: running.tailer.stats.sent == 4)
        finally:
            stats = running.stop()
        assert stats.truncations == 1
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == ["one", "two", "three", "new"]

    def test_truncated_while_stopped(self, tmp_path: Path) -> None:
        """The registry's fingerprint of the first bytes tells a rewritten file even when it grew past the offset."""
        log = tmp_path / "app.log"
        write(log, [b"one", b"two"])
        exporter = FakeKafka()
        opts = options(tmp_path, "app.log")
        once(opts, exporter)
        write(log, [b"other content, longer than before"], mode="wb")
        once(opts, exporter)
        assert [orjson.loads(p)["Msg"] for p in exporter.payloads()] == [
            "one",
            "two",
            "other content, longer than before",
        ]

    def test_rotation_by_rename_loses_nothing(self, tmp_path: Path) -> None:
        """The old file is finished (its unterminated last line too, once it is quiet), the new one picked up."""
        log = tmp_path / "app.log"
        exporter = FakeKafka()
        running = Running(options(tmp_path, "app.log"), exporter)  # the rotated name does not match
        expected: list[bytes] = []
        try:
            for generation in range(3):
                lines = kafkalog_lines(200, generation * 200)
                write(log, lines[:100])
                seen = generation * 201 + 100  # the new file is open: its first lines were read
                wait_until(lambda: running.tailer.stats.lines_read >= seen)  # noqa: B023
                write(log, lines[100:])
                expected += lines
                with log.open("ab") as out:
                    out.write(b"last words")  # no newline: sent when the rotated file is closed
                log.rename(tmp_path / f"app.log.{generation}")
            wait_until(lambda: running.tailer.stats.sent == 603 and running.tailer.stats.files_open == 0)
        finally:
            stats = running.stop()
        payloads = exporter.payloads()
        assert [p for p in payloads if p in set(expected)] == expected  # each once, in order
        assert [orjson.loads(p)["Msg"] for p in payloads if p not in set(expected)] == ["last words"] * 3
        assert stats.rotations == 3

    def test_own_files_are_not_followed(self, tmp_path: Path) -> None:
        """A pattern that matches the registry or the dead-letter file does not tail them."""
        write(tmp_path / "app.log", [b"x"])
        opts = options(tmp_path, "*", registry=tmp_path / "registry.json", dead_letter=tmp_path / "dead.jsonl")
        exporter = FakeKafka()
        once(opts, exporter)
        once(opts, exporter)
        assert len(exporter.payloads()) == 1


# -- when the destination fails ---------------------------------------------------------------


class TestFailures:
    def test_unavailable_kafka_holds_the_file_then_resumes(self, tmp_path: Path) -> None:
        """FAILURE: nothing acknowledged, the registry stays, the records are retried until they go, once each."""
        log = tmp_path / "app.log"
        lines = kafkalog_lines(100)
        write(log, lines)
        exporter = FakeKafka()
        exporter.fail = True
        opts = options(tmp_path, "app.log", batch_size=10)
        running = Running(opts, exporter)
        try:
            wait_until(lambda: running.tailer.stats.retries >= 3)
            stats = running.tailer.stats
            assert stats.sent == 0 and stats.state == "waiting for Kafka"
            assert stats.lines_read <= 10 * FakeKafka.max_in_flight  # the file is the buffer
            assert registry_offsets(opts) == {str(log): 0}
            exporter.fail = False
            wait_until(lambda: running.tailer.stats.sent == 100)
        finally:
            running.stop()
        assert sorted(exporter.payloads()) == sorted(lines)
        assert registry_offsets(opts) == {str(log): log.stat().st_size}

    def test_refused_records_go_to_the_dead_letter_file(self, tmp_path: Path) -> None:
        """A record refused max_attempts times is written to the dead-letter file; the others and the offset go on."""
        log = tmp_path / "app.log"
        lines = kafkalog_lines(20)
        poison = lines[7]
        write(log, lines)
        exporter = FakeKafka()
        exporter.refuse.add(poison)
        opts = options(tmp_path, "app.log", batch_size=5, max_attempts=3)
        stats = once(opts, exporter)
        assert stats.dead_lettered == 1 and stats.sent == 19
        assert exporter.payloads() == [p for p in lines if p != poison]
        assert opts.dead_letter.read_bytes() == poison + b"\n"
        assert registry_offsets(opts) == {str(log): log.stat().st_size}
        assert exporter.calls == 4 + 2  # 4 batches, the poisoned one sent twice more (3 attempts)

    def test_stop_while_failing_keeps_the_offset(self, tmp_path: Path) -> None:
        log = tmp_path / "app.log"
        write(log, kafkalog_lines(5))
        exporter = FakeKafka()
        exporter.fail = True
        opts = options(tmp_path, "app.log")
        running = Running(opts, exporter)
        wait_until(lambda: running.tailer.stats.retries >= 1)
        running.stop()
        assert running.tailer.unacknowledged == 5
        assert registry_offsets(opts) == {str(log): 0}


class TestCommand:
    def test_nothing_to_follow_is_a_usage_error(self) -> None:
        result = CliRunner().invoke(main, ["tail"])
        assert result.exit_code == 2
        assert "LOGPIPE_TAIL_PATHS" in result.output

    def test_bad_kafka_setting_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LOGPIPE_KAFKA_ACKS", "2")
        result = CliRunner().invoke(main, ["tail", "x.log"])
        assert result.exit_code == 2
        assert "LOGPIPE_KAFKA_ACKS" in result.output


# -- against the real broker ----------------------------------------------------------------


def unique_topic(name: str) -> str:
    return f"logpipe-test-tail-{name}-{uuid.uuid4().hex[:10]}"


def kafka(address: str, topic: str, **extra: Any) -> KafkaExporter:
    return KafkaExporter(KafkaOptions(bootstrap_servers=address, topic=topic, **extra))


@pytest.mark.kafka
def test_every_line_arrives_once_with_its_bytes(kafka_service: Service, tmp_path: Path) -> None:
    """`logpipe tail --once`: N lines -> exactly N messages; KafkaLog lines byte for byte with their id header."""
    topic = unique_topic("bytes")
    log = tmp_path / "app.jsonl"
    lines = kafkalog_lines(3000)
    write(log, lines[:1500] + [b"Traceback (most recent call last):", b"{broken"] + lines[1500:])
    args = ["tail", "--once", "-q", "-b", kafka_service.address, "-t", topic, "--registry", "reg.json", str(log)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "sent=3002" in result.output and "wrapped=2" in result.output
    messages = consume_all(kafka_service.address, topic)
    assert len(messages) == 3002
    values = Counter(m.value for m in messages)
    assert all(values[line] == 1 for line in lines)
    for m in messages:
        assert dict(m.headers)["id"] == orjson.loads(m.value)["Id"].encode()
    wrapped = sorted(orjson.loads(m.value)["Msg"] for m in messages if m.value not in values.keys() & set(lines))
    assert wrapped == ["Traceback (most recent call last):", "{broken"]


@pytest.mark.kafka
def test_restart_resumes_without_resending(kafka_service: Service, tmp_path: Path) -> None:
    topic = unique_topic("resume")
    log = tmp_path / "app.jsonl"
    opts = options(tmp_path, "app.jsonl")
    first, second = kafkalog_lines(1000), kafkalog_lines(500, 1000)
    write(log, first)
    exporter = kafka(kafka_service.address, topic)
    try:
        assert once(opts, exporter).sent == 1000
        write(log, second)
        assert once(opts, exporter).sent == 500
    finally:
        exporter.shutdown()
    values = [m.value for m in consume_all(kafka_service.address, topic)]
    assert sorted(values) == sorted(first + second)


@pytest.mark.kafka
def test_rotation_while_running_loses_nothing(kafka_service: Service, tmp_path: Path) -> None:
    """Rotated by rename three times (as the file exporter does) while tailing: every line exactly once.

    The pattern covers the rotated names too (as docs/tail.md advises): the renamed file is the same
    inode under a new name, so it is finished, not read again.
    """
    topic = unique_topic("rotation")
    log = tmp_path / "app.jsonl"
    exporter = kafka(kafka_service.address, topic)
    running = Running(options(tmp_path, "app.jsonl*", batch_size=100), exporter)
    expected: list[bytes] = []
    try:
        for generation in range(4):
            lines = kafkalog_lines(1000, generation * 1000)
            for part in range(0, 1000, 250):
                write(log, lines[part : part + 250])
                if part == 0:  # renamed while the tailer has it open
                    seen = generation * 1000 + 1
                    wait_until(lambda: running.tailer.stats.lines_read >= seen)  # noqa: B023
            expected += lines
            if generation < 3:
                log.rename(tmp_path / f"app.jsonl.{generation}")
        wait_until(lambda: running.tailer.stats.sent == 4000, timeout=60)
    finally:
        stats = running.stop()
        exporter.shutdown()
    assert stats.rotations == 3
    values = [m.value for m in consume_all(kafka_service.address, topic)]
    assert sorted(values) == sorted(expected)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_broker(kafka_service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A broker of this test's own (scripts/kafka.sh, other ports and state): stopping it disturbs nobody."""
    if shutil.which("java") is None:
        pytest.skip("java not found: the outage test needs a broker of its own")
    port = free_port()
    env = {
        **os.environ,
        "LOGPIPE_SERVICES_DIR": str(tmp_path_factory.mktemp("own-broker")),
        "LOGPIPE_SERVICES_KAFKA_PORT": str(port),
        "LOGPIPE_SERVICES_KAFKA_CONTROLLER_PORT": str(free_port()),
    }

    class Own(Service):
        def run(self, command: str, timeout: float = 300) -> str:
            done = subprocess.run(
                ["bash", str(self.script), command], capture_output=True, text=True, timeout=timeout, env=env
            )
            if done.returncode != 0:
                raise RuntimeError(f"kafka.sh {command} (port {port}) failed:\n{done.stdout}\n{done.stderr}")
            return done.stdout

    broker = Own(REPO / "scripts" / "kafka.sh", f"127.0.0.1:{port}")
    broker.start()
    try:
        yield broker
    finally:
        broker.run("wipe")


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_stopped_and_restarted_mid_tail_loses_nothing(own_broker: Service, tmp_path: Path) -> None:
    """The broker goes away while lines keep coming: the tailer waits (no spool) and delivers every line after."""
    topic = unique_topic("outage")
    log = tmp_path / "app.jsonl"
    opts = options(tmp_path, "app.jsonl", batch_size=200, max_backoff=1.0)
    exporter = kafka(own_broker.address, topic, down_backoff=0.5)
    running = Running(opts, exporter)
    lines = kafkalog_lines(6000)
    try:
        write(log, lines[:2000])
        wait_until(lambda: running.tailer.stats.sent == 2000, timeout=60)
        own_broker.stop()
        write(log, lines[2000:4000])
        wait_until(lambda: running.tailer.stats.retries >= 2, timeout=60)
        assert running.tailer.stats.sent < 4000
        assert registry_offsets(opts)[str(log)] < log.stat().st_size  # not advanced past what Kafka lacks
        own_broker.start()
        write(log, lines[4000:])
        wait_until(lambda: running.tailer.stats.sent >= 6000, timeout=120)
    finally:
        stats = running.stop()
        exporter.shutdown()
    assert stats.dead_lettered == 0
    values = Counter(m.value for m in consume_all(own_broker.address, topic))
    assert set(values) == set(lines)  # nothing lost; a record Kafka wrote but never acknowledged may repeat
    assert registry_offsets(opts) == {str(log): log.stat().st_size}
