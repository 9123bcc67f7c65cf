"""logpipe tail against the real broker: every line once, restart, rotation, a broker outage."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from conftest import KAFKA_CLIENTS, REPO, Service, consume_all, wait_until
from logpipe.cli import main
from logpipe.exporters.kafka import KafkaExporter, KafkaOptions

from .support import Running, kafkalog_lines, once, options, registry_offsets, write


@pytest.fixture(autouse=True, params=KAFKA_CLIENTS)
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both client libraries: LOGPIPE_KAFKA_CLIENT for the command, `kafka` for the Tailer API."""
    name: str = request.param
    monkeypatch.setenv("LOGPIPE_KAFKA_CLIENT", name)
    return name


def unique_topic(name: str) -> str:
    return f"logpipe-test-tail-{name}-{uuid.uuid4().hex[:10]}"


def kafka(address: str, topic: str, **extra: Any) -> KafkaExporter:
    client = os.environ["LOGPIPE_KAFKA_CLIENT"]  # set by the `client` fixture
    return KafkaExporter(KafkaOptions(bootstrap_servers=address, topic=topic, client=client, **extra))


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


def mixed_events(n: int) -> tuple[list[bytes], int]:
    """Lines of *n* events of every kind (KafkaLog, zap, ECS, text, Python tracebacks) and how many events."""
    lines: list[bytes] = []
    events = 0
    own = kafkalog_lines(n // 5 + 1)
    for i in range(n):
        kind = i % 5
        if kind == 0:
            lines.append(own[i // 5])
        elif kind == 1:
            lines.append(b'{"level":"error","ts":1764745267.1,"caller":"db.go:88","msg":"query %d failed"}' % i)
        elif kind == 2:
            lines.append(b'{"@timestamp":"2026-01-01T12:00:00Z","log.level":"warn","message":"ecs %d"}' % i)
        elif kind == 3:
            lines.append(b"2026-01-01 12:00:00 INFO plain text %d" % i)
        else:
            lines += [
                b"2026-01-01 12:00:00 ERROR failed %d" % i,
                b"Traceback (most recent call last):",
                b'  File "/app/x.py", line 1, in <module>',
                b"ValueError: %d" % i,
            ]
        events += 1
    return lines, events


@pytest.mark.kafka
@pytest.mark.elasticsearch
@pytest.mark.slow
def test_sigkill_mid_file_then_restart_every_event_one_id(
    kafka_service: Service, es_service: Service, tmp_path: Path
) -> None:
    """`logpipe tail` SIGKILLed mid-file and restarted: Kafka may hold repeats, but each event has one Id.

    Wrapped, mapped (zap, ECS), joined (tracebacks) and KafkaLog lines alike:
    the set of Ids on the topic is exactly one per event, so `logpipe ship`
    (``_id`` = ``Id``) stores each event once.
    """
    from elasticsearch import Elasticsearch
    from logpipe.elasticsearch.template import template_name

    topic = unique_topic("sigkill")
    log = tmp_path / "app.log"
    lines, events = mixed_events(6000)
    half = len(lines) // 2
    while not lines[half].startswith(b"2026"):  # the second half begins with an event's first line
        half += 1
    write(log, lines[:half])
    logpipe = str(Path(sys.executable).parent / "logpipe")
    command = [logpipe, "tail", "-q", "-b", kafka_service.address, "-t", topic, "--registry", "reg.json", str(log)]
    env = {
        **os.environ,
        "LOGPIPE_TAIL_MULTILINE": "python",
        "LOGPIPE_TAIL_BATCH_SIZE": "100",
        "LOGPIPE_TAIL_REGISTRY_FLUSH": "60",  # written once early, then not again: the kill loses what follows
        "LOGPIPE_TAIL_DEAD_LETTER": str(tmp_path / "dead.jsonl"),
    }
    registry = tmp_path / "reg.json"

    def offset() -> int:
        try:
            return int(orjson.loads(registry.read_bytes())["files"][0]["offset"])
        except (OSError, ValueError, LookupError):
            return 0

    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: offset() > 0 or first.poll() is not None, timeout=120, interval=0.01)
        write(log, lines[half:])
        time.sleep(0.5)  # more is sent and acknowledged, but the registry does not say so
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert 0 < offset() < log.stat().st_size, "killed too late: not mid-file"
    done = subprocess.run([*command, "--once"], cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert offset() == log.stat().st_size

    messages = consume_all(kafka_service.address, topic)
    ids = [orjson.loads(m.value)["Id"] for m in messages]
    assert len(set(ids)) == events < len(ids)  # repeats, each with the Id of its first sending
    own = {orjson.loads(line)["Id"] for line in lines if line.startswith(b'{"Type"')}
    assert own <= set(ids)
    for m in messages:
        assert dict(m.headers)["id"] == orjson.loads(m.value)["Id"].encode()

    prefix = f"lptest-{topic[-10:]}"
    ship = [
        logpipe, "ship", "-q", "-b", kafka_service.address, "-t", topic, "-g", prefix,
        "--es-hosts", es_service.address, "--index-prefix", prefix,
    ]  # fmt: skip
    ship_env = {**os.environ, "LOGPIPE_ELASTICSEARCH_REPLICAS": "0"}
    shipper = subprocess.Popen(ship, env=ship_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with Elasticsearch(es_service.address, request_timeout=30) as client:
        try:

            def count() -> int:
                # 404: no index yet; 503: an index just created whose shard is not started yet
                lenient = client.options(ignore_status=(404, 503))
                lenient.indices.refresh(index=f"{prefix}-*")
                return int(lenient.count(index=f"{prefix}-*").get("count", 0))

            wait_until(lambda: count() >= events, timeout=180, interval=0.5)
            time.sleep(1.0)  # nothing more arrives: each repeat overwrote its document
            assert count() == events
        finally:
            shipper.send_signal(signal.SIGTERM)
            shipper.wait(60)
            client.options(ignore_status=404).indices.delete(index=f"{prefix}-*")
            client.options(ignore_status=404).indices.delete_index_template(name=template_name(prefix))
