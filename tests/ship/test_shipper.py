"""Tests for ``logpipe ship`` (logpipe.ship): Kafka -> Elasticsearch, at least once, no duplicates.

Everything runs against the real broker and node. Records are produced
through the structlog chain; where the shipper must die or be signalled it
runs as a subprocess of the ``logpipe`` command, elsewhere in a thread
through its Python API. Each test has its own topic, group and index prefix
and deletes them afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from click.testing import CliRunner

import logpipe
from conftest import KAFKA_CLIENTS, Service, wait_until
from logpipe import deadletter, plugins
from logpipe import elasticsearch as es
from logpipe.cli import main
from logpipe.exceptions import ConfigError
from logpipe.exporters.base import Exporter, ExportResult
from logpipe.record import Record, make_record
from logpipe.ship import ShipOptions, Shipper, load_options
from logpipe.testing import InMemoryExporter

servers = [pytest.mark.kafka, pytest.mark.elasticsearch]

LOGPIPE = Path(sys.executable).parent / "logpipe"
PARTITIONS = 3


# -- unit: options ------------------------------------------------------------------------------


class TestOptions:
    def test_one_source_needed(self) -> None:
        """Neither or both of topics and pattern is an error naming both variables."""
        with pytest.raises(ConfigError, match="LOGPIPE_SHIP_TOPICS.*LOGPIPE_SHIP_PATTERN"):
            load_options({}, environ={})
        with pytest.raises(ConfigError, match="exactly one"):
            load_options({"topics": "a", "pattern": "b.*"}, environ={})

    def test_env_and_overrides(self) -> None:
        """LOGPIPE_SHIP_* is read; ES hosts and prefix fall back to LOGPIPE_ELASTICSEARCH_*."""
        environ = {
            "LOGPIPE_SHIP_TOPICS": "a,b",
            "LOGPIPE_SHIP_BATCH_MAX_WAIT": "0.25",
            "LOGPIPE_ELASTICSEARCH_HOSTS": "http://es:9200",
            "LOGPIPE_ELASTICSEARCH_INDEX_PREFIX": "apps",
        }
        ship, opts = load_options({}, environ=environ)
        assert ship.topics == ("a", "b") and ship.batch_max_wait == 0.25 and ship.group_id == "logpipe-shipper"
        assert opts.hosts == ("http://es:9200",) and opts.index_prefix == "apps"
        ship, opts = load_options({"es_hosts": "http://other:9200", "index_prefix": "x"}, environ=environ)
        assert opts.hosts == ("http://other:9200",) and opts.index_prefix == "x"

    @pytest.mark.parametrize(
        ("env", "words"),
        [
            ({"LOGPIPE_SHIP_PATTERN": "logs.("}, "LOGPIPE_SHIP_PATTERN"),
            ({"LOGPIPE_SHIP_TOPICS": "a", "LOGPIPE_SHIP_DEAD_LETTER": "{partition}.dlq"}, "LOGPIPE_SHIP_DEAD_LETTER"),
            ({"LOGPIPE_SHIP_TOPICS": "a", "LOGPIPE_SHIP_DEAD_LETTER": "bad name"}, "LOGPIPE_SHIP_DEAD_LETTER"),
            ({"LOGPIPE_SHIP_TOPICS": "a", "LOGPIPE_SHIP_BATCH_SIZE": "0"}, "LOGPIPE_SHIP_BATCH_SIZE"),
            ({"LOGPIPE_SHIP_TOPICS": "a", "LOGPIPE_SHIP_ES_HOSTS": "es:9200"}, "LOGPIPE_SHIP_ES_HOSTS"),
            ({"LOGPIPE_SHIP_TOPICS": "a", "LOGPIPE_SHIP_KAFKA_CLIENT": "librdkafka"}, "LOGPIPE_SHIP_KAFKA_CLIENT"),
        ],
    )
    def test_bad_values_name_the_variable(self, env: dict[str, str], words: str) -> None:
        """Each mistake is reported with the variable to fix."""
        with pytest.raises(ConfigError, match=words):
            load_options({}, environ=env)

    def test_kafka_client_auto_prefers_confluent_kafka(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """auto takes confluent-kafka when it can be imported, kafka-python otherwise; a missing one is named."""
        from logpipe.ship import consumer

        assert consumer.resolve_client("auto") == "confluent-kafka"  # the test extra installs both
        monkeypatch.setattr(consumer, "_installed", lambda module: module != "confluent_kafka")
        monkeypatch.setattr("logpipe.kafkaclient._importable", lambda module: module != "confluent_kafka")
        assert consumer.resolve_client("auto") == "kafka-python"
        with pytest.raises(ConfigError, match=r"LOGPIPE_SHIP_KAFKA_CLIENT=confluent-kafka: .*logpipe-kafkalog\[ship\]"):
            load_options({"topics": "a", "kafka_client": "confluent-kafka"}, environ={})

    def test_pattern_librdkafka_cannot_compile(self) -> None:
        """Lookahead: auto falls back to kafka-python; confluent-kafka asked for by name is refused, naming both."""
        from logpipe.ship import consumer

        lookahead = r"^logs\.(?!.*\.dlq$)"
        assert consumer.resolve_client("auto", pattern=lookahead) == "kafka-python"
        assert consumer.resolve_client("auto", pattern=r"^logs\.[a-z]+$") == "confluent-kafka"
        with pytest.raises(ConfigError, match=r"LOGPIPE_SHIP_PATTERN=.*LOGPIPE_SHIP_KAFKA_CLIENT=kafka-python"):
            load_options({"pattern": lookahead, "kafka_client": "confluent-kafka"}, environ={})

    def test_cli_names_the_flag(self) -> None:
        """On the command line the error names the flag."""
        result = CliRunner().invoke(main, ["ship", "-t", "x", "--batch-size", "0"])
        assert result.exit_code == 2 and "--batch-size" in result.output


# -- fixtures and helpers ---------------------------------------------------------------------------


class _ProducerExporter(Exporter):
    """Stand-in used only when the kafka exporter is not installed: a plain kafka-python producer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaProducer

        super().__init__()
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")

    def export(self, batch: Sequence[Record]) -> ExportResult:
        for r in batch:
            self.producer.send(self.topic, r.payload, key=r.id.encode())
        self.producer.flush(30)
        return ExportResult.SUCCESS

    def shutdown(self, timeout: float = 10.0) -> None:
        self.producer.close(timeout)


class Chain:
    """Logs through the structlog chain into a topic and remembers every Id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.memory = InMemoryExporter()
        if "kafka" in plugins.available():
            primary: Any = "kafka"
        else:
            primary = _ProducerExporter(bootstrap, topic)
        self.pipeline = logpipe.configure(
            exporter=[primary, self.memory],
            fallback_exporter="none",
            exporter_options={"kafka": {"bootstrap_servers": bootstrap, "topic": topic}},
            local_render="none",
        )
        structlog.configure(processors=self.pipeline.processors(), cache_logger_on_first_use=False)
        self.log = structlog.get_logger("shop")

    def emit(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            self.log.info("order placed", order=i, user=f"u{i % 17}")

    def flush(self) -> list[str]:
        assert self.pipeline.force_flush(60)
        stats = self.pipeline.stats()
        assert all(s.dropped == s.failed == s.spilled == 0 for s in stats.values()), stats
        return self.memory.ids()


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each end-to-end test runs once per Kafka client library (LOGPIPE_SHIP_KAFKA_CLIENT)."""
    monkeypatch.setenv("LOGPIPE_SHIP_KAFKA_CLIENT", request.param)
    return str(request.param)


@pytest.fixture
def client(es_service: Service) -> Iterator[Any]:
    from elasticsearch import Elasticsearch

    with Elasticsearch(es_service.address, request_timeout=30, max_retries=0) as c:
        yield c


@pytest.fixture
def names(kafka_service: Service, client: Any) -> Iterator[dict[str, str]]:
    """A fresh topic (3 partitions), group and index prefix; all deleted afterwards."""
    from kafka import KafkaAdminClient

    tag = uuid.uuid4().hex[:10]
    n = {"topic": f"lptest-{tag}", "group": f"lptest-{tag}", "prefix": f"lptest-{tag}"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_service.address)
    admin.create_topics({n["topic"]: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    yield n
    existing = [t for t in admin.list_topics() if t.startswith(n["topic"])]
    if existing:
        admin.delete_topics(existing, raise_errors=False)
    with contextlib.suppress(Exception):  # a group that never committed does not exist
        admin.delete_groups([n["group"]])
    admin.close()
    client.options(ignore_status=404).indices.delete(index=f"{n['prefix']}-*")
    client.options(ignore_status=404).indices.delete_index_template(name=es.template_name(n["prefix"]))


def _count(client: Any, prefix: str) -> int:
    try:
        client.indices.refresh(index=f"{prefix}-*")
        return int(client.count(index=f"{prefix}-*")["count"])
    except Exception:  # the node may be stopped on purpose
        return -1


def _documents(client: Any, prefix: str) -> list[tuple[str, str]]:
    """(_id, Id) of every document under *prefix*."""
    from elasticsearch.helpers import scan

    client.indices.refresh(index=f"{prefix}-*")
    return [(d["_id"], d["_source"]["Id"]) for d in scan(client, index=f"{prefix}-*", query={"_source": ["Id"]})]


def _assert_exactly(client: Any, prefix: str, ids: Sequence[str]) -> None:
    """Every Id is indexed once: count == N, distinct Ids == N, _id == Id."""
    docs = _documents(client, prefix)
    assert len(docs) == len(ids), f"{len(docs)} documents for {len(ids)} records"
    assert all(doc_id == record_id for doc_id, record_id in docs)
    assert {record_id for _, record_id in docs} == set(ids)
    hits = client.search(index=f"{prefix}-*", query={"ids": {"values": list(ids[:50])}}, size=50)
    assert hits["hits"]["total"]["value"] == min(50, len(ids))


def _committed(kafka_service: Service, group: str, admin: Any = None) -> int:
    """Sum of the group's committed offsets."""
    from kafka import KafkaAdminClient

    own = admin is None
    admin = admin or KafkaAdminClient(bootstrap_servers=kafka_service.address)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return sum(max(meta.offset, 0) for meta in offsets.values())
    finally:
        if own:
            admin.close()


def _spawn(
    kafka_service: Service,
    es_service: Service,
    names: dict[str, str],
    log: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    command = [
        str(LOGPIPE),
        "ship",
        "--quiet",
        "-b",
        kafka_service.address,
        "-t",
        names["topic"],
        "--group",
        names["group"],
        "--es-hosts",
        es_service.address,
        "--index-prefix",
        names["prefix"],
        *extra,
    ]
    environ = {**os.environ, "LOGPIPE_ELASTICSEARCH_REPLICAS": "0", **(env or {})}
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ)


def _stop(process: subprocess.Popen[bytes], log: Path) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    text = log.read_text()
    assert code == 0, text
    return text


def _options(
    kafka_service: Service, es_service: Service, names: dict[str, str], **ship: Any
) -> tuple[ShipOptions, es.ElasticsearchOptions]:
    overrides = {
        "bootstrap_servers": kafka_service.address,
        "topics": names["topic"],
        "group_id": names["group"],
        "es_hosts": es_service.address,
        "index_prefix": names["prefix"],
        "batch_max_wait": 0.2,
        "status_interval": 0.2,
        **ship,
    }
    client = {"LOGPIPE_SHIP_KAFKA_CLIENT": os.environ.get("LOGPIPE_SHIP_KAFKA_CLIENT", "auto")}
    return load_options(overrides, environ={"LOGPIPE_ELASTICSEARCH_REPLICAS": "0", **client})


class _Running:
    """A `Shipper` on a thread; `stop` joins it and returns its stats."""

    def __init__(self, shipper: Shipper) -> None:
        self.shipper = shipper
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.shipper.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> Any:
        self.shipper.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "shipper did not stop"
        if self.error is not None:
            raise self.error
        return self.shipper.stats


def _ship_in_thread(
    kafka_service: Service,
    es_service: Service,
    names: dict[str, str],
    es_changes: dict[str, Any] | None = None,
    **ship: Any,
) -> _Running:
    options, es_options = _options(kafka_service, es_service, names, **ship)
    if es_changes:
        es_options = replace(es_options, **es_changes)
    shipper = Shipper(options, es_options, progress=lambda stats: None, track_lag=True)
    assert shipper.kafka_client == os.environ.get("LOGPIPE_SHIP_KAFKA_CLIENT", shipper.kafka_client)
    return _Running(shipper)


def _wait_count(client: Any, prefix: str, n: int, timeout: float) -> None:
    wait_until(lambda: _count(client, prefix) == n, timeout, interval=0.2)


# -- end to end ----------------------------------------------------------------------------------------


N = 5000


@servers[0]
@servers[1]
@pytest.mark.usefixtures("kafka_client")
class TestEndToEnd:
    def test_chain_to_kafka_to_ship_to_elasticsearch(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str], tmp_path: Path
    ) -> None:
        """5,000 events logged into Kafka are all searchable by Id, exactly once; SIGTERM commits."""
        chain = Chain(kafka_service.address, names["topic"])
        chain.emit(N)
        ids = chain.flush()
        assert len(ids) == N

        log = tmp_path / "ship.log"
        started = time.monotonic()
        process = _spawn(kafka_service, es_service, names, log, "--batch-size", "1000")
        _wait_count(client, names["prefix"], N, 120)
        elapsed = time.monotonic() - started
        summary = _stop(process, log)

        _assert_exactly(client, names["prefix"], ids)
        assert f"indexed={N} duplicates=0" in summary
        assert f"client={os.environ['LOGPIPE_SHIP_KAFKA_CLIENT']}" in summary
        assert _committed(kafka_service, names["group"]) == N
        print(f"\nshipped {N} records in {elapsed:.1f}s including start-up; {summary.strip()}")

    def test_elasticsearch_restart_mid_stream(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str]
    ) -> None:
        """ES stopped and started while records flow: retried without committing, 0 lost, 0 duplicates."""
        chain = Chain(kafka_service.address, names["topic"])
        running = _ship_in_thread(
            kafka_service,
            es_service,
            names,
            es_changes={"max_retries": 1, "backoff": 0.1, "max_backoff": 1.0, "timeout": 5.0},
            batch_size=200,
        )
        stats = running.shipper.stats
        produced = 0
        outage: dict[str, float] = {}

        def restart() -> None:
            outage["stop"] = time.monotonic()
            es_service.stop()
            try:
                # keep it down until the shipper has noticed and retried at least once
                wait_until(lambda: stats.retries > 0, 60, interval=0.05)
            finally:
                outage["start"] = time.monotonic()
                es_service.start()
                outage["up"] = time.monotonic()

        # a steady stream: 200 records per round, before, during and after the outage
        chain.emit(200)
        produced += 200
        chain.flush()
        wait_until(lambda: stats.indexed >= 200, 60)
        restarter = threading.Thread(target=restart)
        restarter.start()
        while restarter.is_alive() or produced < 3000:
            chain.emit(200, start=produced)
            produced += 200
            chain.flush()
            time.sleep(0.1)  # pacing the producer, not synchronisation
        restarter.join()
        ids = chain.flush()
        assert len(ids) == produced

        _wait_count(client, names["prefix"], produced, 120)
        final = running.stop()
        _assert_exactly(client, names["prefix"], ids)
        assert final.retries > 0 and final.in_flight == 0
        assert _committed(kafka_service, names["group"]) == produced
        print(
            f"\n{produced} records; ES down {outage['start'] - outage['stop']:.1f}s "
            f"(start took {outage['up'] - outage['start']:.1f}s); retries={final.retries} "
            f"duplicates={final.duplicates}"
        )

    def test_sigkill_mid_batch_then_restart(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str], tmp_path: Path
    ) -> None:
        """Killed (SIGKILL) between indexing and committing, a restarted shipper loses and duplicates nothing."""
        chain = Chain(kafka_service.address, names["topic"])
        chain.emit(N)
        ids = chain.flush()

        from kafka import KafkaAdminClient

        log = tmp_path / "ship.log"
        # 1,000-message batches sent as 100 bulk requests of 10: a batch is visibly half done for a while
        env = {"LOGPIPE_ELASTICSEARCH_CHUNK_SIZE": "10"}
        # the killed member holds its partitions until its session times out (broker minimum: 6 s)
        args = ("--batch-size", "1000", "--session-timeout", "6")
        first = _spawn(kafka_service, es_service, names, log, *args, env=env)
        seen: dict[str, int] = {}
        admin = KafkaAdminClient(bootstrap_servers=kafka_service.address)

        def mid_batch() -> bool:
            indexed = _count(client, names["prefix"])
            committed = _committed(kafka_service, names["group"], admin)
            if indexed > committed and indexed < N:
                seen.update(indexed=indexed, committed=committed)
                return True
            assert indexed < N, "the first shipper finished before it could be killed mid-batch"
            return False

        try:
            wait_until(mid_batch, 120, interval=0.01)
        finally:
            first.send_signal(signal.SIGKILL)
            admin.close()
        assert first.wait(30) == -signal.SIGKILL

        second = _spawn(kafka_service, es_service, names, log, *args, env=env)
        _wait_count(client, names["prefix"], N, 120)
        summary = _stop(second, log)
        _assert_exactly(client, names["prefix"], ids)
        assert _committed(kafka_service, names["group"]) == N
        assert "duplicates=0 " not in summary  # the uncommitted, already indexed part came back: 409s
        print(f"\nkilled with {seen['indexed']} indexed / {seen['committed']} committed; {summary.strip()}")

    def test_unreachable_elasticsearch_commits_nothing(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str]
    ) -> None:
        """While ES does not answer nothing is committed; a stop leaves the batch for the next shipper."""
        chain = Chain(kafka_service.address, names["topic"])
        chain.emit(500)
        ids = chain.flush()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
        down = _ship_in_thread(
            kafka_service,
            es_service,
            names,
            es_hosts=closed,
            shutdown_timeout=0.5,
            es_changes={"install_template": False, "max_retries": 0, "backoff": 0.05, "max_backoff": 0.2},
        )
        stats = down.shipper.stats
        wait_until(lambda: stats.retries >= 3 and stats.in_flight > 0, 30)
        assert stats.state == "waiting for Elasticsearch" and stats.assigned == PARTITIONS
        assert "ConnectionError" in (stats.last_error or "")
        final = down.stop()
        assert final.in_flight > 0 and final.indexed == 0
        assert _committed(kafka_service, names["group"]) == 0

        up = _ship_in_thread(kafka_service, es_service, names)
        _wait_count(client, names["prefix"], 500, 60)
        up.stop()
        _assert_exactly(client, names["prefix"], ids)

    def test_consumer_group_shares_partitions(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str]
    ) -> None:
        """Two shippers in one group split the partitions and together ship every record once."""
        a = _ship_in_thread(kafka_service, es_service, names, batch_size=100)
        b = _ship_in_thread(kafka_service, es_service, names, batch_size=100)
        wait_until(
            lambda: (
                a.shipper.stats.assigned
                and b.shipper.stats.assigned
                and a.shipper.stats.assigned + b.shipper.stats.assigned == PARTITIONS
            ),
            60,
        )
        # Round robin over the partitions: a sticky partitioner may put a whole run into partitions one
        # shipper owns, and the other would rightly index nothing.
        from kafka import KafkaProducer

        records = [make_record(type="info", msg=f"shared {n}") for n in range(3000)]
        producer = KafkaProducer(bootstrap_servers=kafka_service.address, acks="all")
        for n, record in enumerate(records):
            producer.send(names["topic"], record.payload, partition=n % PARTITIONS)
        producer.flush(60)
        producer.close()
        ids = [r.id for r in records]
        _wait_count(client, names["prefix"], 3000, 120)
        sa, sb = a.stop(), b.stop()
        _assert_exactly(client, names["prefix"], ids)
        assert sa.indexed > 0 and sb.indexed > 0 and sa.indexed + sb.indexed == 3000

    def test_pattern_subscription(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str]
    ) -> None:
        """--pattern ships every topic it matches (librdkafka's regex syntax is given a leading ^)."""
        chain = Chain(kafka_service.address, names["topic"])
        chain.emit(300)
        ids = chain.flush()
        running = _ship_in_thread(kafka_service, es_service, names, topics="", pattern=names["topic"][:-2] + "..")
        _wait_count(client, names["prefix"], 300, 60)
        stats = running.stop()
        _assert_exactly(client, names["prefix"], ids)
        assert stats.indexed == 300 and stats.assigned == PARTITIONS

    def test_static_membership_restart(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str]
    ) -> None:
        """--instance-id: a shipper restarted with the same id takes over where its commits left off."""
        chain = Chain(kafka_service.address, names["topic"])
        instance = f"shipper-{names['group']}"
        chain.emit(300)
        chain.flush()
        running = _ship_in_thread(kafka_service, es_service, names, instance_id=instance)
        _wait_count(client, names["prefix"], 300, 60)
        assert running.stop().indexed == 300
        chain.emit(300)
        ids = chain.flush()  # all 600
        running = _ship_in_thread(kafka_service, es_service, names, instance_id=instance)
        _wait_count(client, names["prefix"], 600, 60)
        stats = running.stop()
        _assert_exactly(client, names["prefix"], ids)
        assert stats.indexed == 300 and stats.duplicates == 0

    def test_unreachable_kafka_fails_at_start(self, es_service: Service, kafka_client: str, client: Any) -> None:
        """A wrong bootstrap address ends the command with an error naming the flag, not a silent wait."""
        prefix = f"lptest-{uuid.uuid4().hex[:10]}"
        command = [str(LOGPIPE), "ship", "-q", "-b", "127.0.0.1:1", "-t", "x", "--es-hosts", es_service.address]
        try:
            done = subprocess.run([*command, "--index-prefix", prefix], capture_output=True, text=True, timeout=120)
        finally:
            client.options(ignore_status=404).indices.delete_index_template(name=es.template_name(prefix))
        assert done.returncode == 1, done.stderr
        assert "Kafka at 127.0.0.1:1 (--bootstrap-servers / LOGPIPE_SHIP_BOOTSTRAP_SERVERS)" in done.stderr
        assert done.stderr.count("\n") < 10, done.stderr  # librdkafka's reconnect attempts are not printed

    def test_pipelined_batches_commit_in_poll_order(
        self,
        kafka_service: Service,
        es_service: Service,
        client: Any,
        names: dict[str, str],
    ) -> None:
        """The first batch's request is held back: the next batch is indexed meanwhile, nothing is committed.

        Once it is let go everything is committed, and the bulk threads end with the shipper.
        """
        chain = Chain(kafka_service.address, names["topic"])
        chain.emit(600)
        ids = chain.flush()
        gate = threading.Event()
        held: list[int] = []
        lock = threading.Lock()
        options, es_options = _options(kafka_service, es_service, names, batch_size=100, concurrency=2)
        real = es.ClientIndexer(es_options)

        class FirstOneWaits:
            """The real indexer, except that the first request waits for the gate."""

            def send(self, lines: Sequence[bytes], indices: Sequence[str]) -> es.BulkReply:
                with lock:
                    first = not held
                    held.append(len(lines))
                if first:
                    gate.wait(60)
                return real.send(lines, indices)

            def install_template(self) -> None:
                real.install_template()

            def close(self) -> None:
                real.close()

        ticks: list[int] = []
        shipper = Shipper(
            options, es_options, progress=lambda stats: ticks.append(stats.commits), indexer=FirstOneWaits()
        )
        running = _Running(shipper)
        try:
            # the second batch went through while the first one's request hangs (its reply is settled
            # after the first one's: replies are accounted for in poll order) ...
            assert wait_until(lambda: _count(client, names["prefix"]) >= 100, 60)
            # ... and the shipper has been round its loop since (progress is called after each settle)
            seen = len(ticks)
            assert wait_until(lambda: len(ticks) >= seen + 2, 30)
            # (batches may be partial: a poll hands over what has arrived, so count what was indexed)
            assert shipper.stats.commits == 0 and shipper.stats.in_flight >= _count(client, names["prefix"]) + 1
            assert _committed(kafka_service, names["group"]) == 0
        finally:
            gate.set()
        _wait_count(client, names["prefix"], 600, 60)
        assert wait_until(lambda: _committed(kafka_service, names["group"]) == 600, 60)
        stats = running.stop()
        _assert_exactly(client, names["prefix"], ids)
        assert stats.in_flight == 0 and stats.indexed == 600
        assert wait_until(lambda: not any(t.name.startswith("logpipe-bulk") for t in threading.enumerate()), 30)


# -- dead letters --------------------------------------------------------------------------------------


def _produce_raw(kafka_service: Service, topic: str, values: Sequence[bytes]) -> None:
    """Send *values* in order to partition 0."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_service.address, acks="all", max_request_size=4 * 1024 * 1024)
    for value in values:
        producer.send(topic, value, partition=0)
    producer.flush(30)
    producer.close()


def _malformed_stream(topic: str) -> tuple[list[bytes], list[str], dict[int, str]]:
    """Good, foreign and bad messages interleaved; returns values, the Ids indexed, {offset: reason words}.

    Only what is too large and what Elasticsearch refuses is dead-lettered: text, JSON arrays, records
    without Id or with an unreadable Time are indexed (as text records or mapped, see ship.documents).
    """
    good = [make_record(type="info", msg=f"good {i}") for i in range(6)]
    oversized = make_record(type="info", msg="x" * 20_000)
    pretty = make_record(type="info", msg="pretty\nprinted")
    no_id = orjson.loads(good[0].payload)
    del no_id["Id"]
    bad_time = make_record(type="info", msg="bad time")
    bad_time_doc = orjson.loads(bad_time.payload)
    bad_time_doc["Time"] = "yesterday"
    refused_doc = orjson.loads(make_record(type="info", msg="refused").payload)
    refused_doc["Type"] = {"not": "a keyword"}  # Type is a keyword field: Elasticsearch refuses an object
    values = [
        good[0].payload,
        b"\xff\xfenot json at all",
        b"[1, 2, 3]",
        orjson.dumps(no_id),
        good[1].payload,
        oversized.payload,
        orjson.dumps(refused_doc),
        orjson.dumps(bad_time_doc),
        *[g.payload for g in good[2:]],
        # valid, but over several lines: shipped (its newlines are JSON whitespace), not dead-lettered
        orjson.dumps(orjson.loads(pretty.payload), option=orjson.OPT_INDENT_2),
    ]
    indexed = [g.id for g in good] + [pretty.id, bad_time.id] + [f"{topic}+0+{offset}" for offset in (1, 2, 3)]
    reasons = {5: "max_message_bytes", 6: "refused by Elasticsearch: document_parsing_exception"}
    return values, indexed, reasons


@servers[0]
@servers[1]
@pytest.mark.usefixtures("kafka_client")
class TestDeadLetters:
    def test_to_a_kafka_topic(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str]
    ) -> None:
        """Bad messages go to <topic>.dlq unchanged with reason/topic/partition/offset headers."""
        from kafka import KafkaConsumer

        values, good_ids, reasons = _malformed_stream(names["topic"])
        _produce_raw(kafka_service, names["topic"], values)
        running = _ship_in_thread(kafka_service, es_service, names, max_message_bytes=10_000)
        _wait_count(client, names["prefix"], len(good_ids), 60)
        wait_until(lambda: running.shipper.stats.dead_lettered == len(reasons), 30)
        stats = running.stop()
        _assert_exactly(client, names["prefix"], good_ids)
        assert stats.rejected == 1 and stats.in_flight == 0
        assert _committed(kafka_service, names["group"]) == len(values)

        consumer = KafkaConsumer(
            f"{names['topic']}.dlq",
            bootstrap_servers=kafka_service.address,
            auto_offset_reset="earliest",
            consumer_timeout_ms=10_000,
        )
        letters = {}
        for message in consumer:
            headers = {k: v.decode() for k, v in message.headers}
            letters[int(headers["logpipe.dlq.offset"])] = (message.value, headers)
            if len(letters) == len(reasons):
                break
        consumer.close()
        assert sorted(letters) == sorted(reasons)
        for offset, words in reasons.items():
            value, headers = letters[offset]
            assert value == values[offset]
            assert words in headers["logpipe.dlq.reason"]
            assert headers["logpipe.dlq.topic"] == names["topic"]
            assert headers["logpipe.dlq.partition"] == "0"
        assert letters[6][1]["logpipe.dlq.status"] == "400"

    def test_to_a_file(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str], tmp_path: Path
    ) -> None:
        """With file:PATH the dead letters are JSON lines with the reason and where they came from."""
        values, good_ids, reasons = _malformed_stream(names["topic"])
        _produce_raw(kafka_service, names["topic"], values)
        path = tmp_path / "dead" / "ship.jsonl"
        running = _ship_in_thread(
            kafka_service, es_service, names, max_message_bytes=10_000, dead_letter=f"file:{path}"
        )
        _wait_count(client, names["prefix"], len(good_ids), 60)
        wait_until(lambda: running.shipper.stats.dead_lettered == len(reasons), 30)
        running.stop()
        entries = {e["source"]["offset"]: e for e in deadletter.read(path)}
        assert sorted(entries) == sorted(reasons)
        for offset, words in reasons.items():
            assert words in entries[offset]["reason"]
            assert entries[offset]["source"]["topic"] == names["topic"]
            assert entries[offset]["source"]["partition"] == 0
            assert deadletter.original(entries[offset]) == values[offset]  # the bytes as they came
        assert entries[6]["status"] == 400 and orjson.loads(entries[6]["value"])["Msg"] == "refused"
        assert len(entries[5]["value"]) > 10_000  # the oversized message is kept whole


def _fleet_stream() -> tuple[list[bytes], dict[str, int]]:
    """What a mixed fleet writes to one topic; returns the values and how many of each Type to expect."""
    seed = [
        orjson.dumps(
            {
                "Type": "info",
                "Action": "click",
                "Time": f"2026-12-03 16:00:0{i}",
                "Msg": f"seed {i}",
                "Field": {"order": i},
                "FuncName": "pay.Handle",
            }
        )
        for i in range(5)
    ]
    zap = [
        orjson.dumps(
            {
                "level": "error",
                "ts": 1764748800.5 + i,
                "caller": "project/db.go:88",
                "msg": f"zap query failed {i}",
                "error": "timeout",
            }
        )
        for i in range(4)
    ]
    ecs = [
        orjson.dumps(
            {
                "@timestamp": "2026-12-03T08:00:00.000Z",
                "log.level": "warn",
                "message": f"ecs slow {i}",
                "service": {"name": "checkout"},
                "ecs.version": "1.6.0",
            }
        )
        for i in range(3)
    ]
    cri = [f"2026-12-03T08:00:0{i}.123456789Z stdout F cri line {i}".encode() for i in range(2)]
    traceback = b'Traceback (most recent call last):\n  File "app.py", line 3, in <module>\nKeyError: 1'
    junk = [b"\xff\xfe\x00 binary", b"plain text line"]
    values = [*seed, *zap, *ecs, *cri, traceback, *junk]
    return values, {"info": 5, "error": 4, "warning": 3, "raw": 5}


@servers[0]
@servers[1]
@pytest.mark.usefixtures("kafka_client")
class TestMixedFleet:
    def test_every_message_indexed_once_searchable_by_level(
        self, kafka_service: Service, es_service: Service, client: Any, names: dict[str, str]
    ) -> None:
        """Seed records (no Id, local time), zap, ECS, CRI, a traceback and junk: all indexed exactly once."""
        from click.testing import CliRunner

        from logpipe.cli import main

        values, types = _fleet_stream()
        _produce_raw(kafka_service, names["topic"], values)
        running = _ship_in_thread(kafka_service, es_service, names, default_timezone="Asia/Shanghai")
        _wait_count(client, names["prefix"], len(values), 60)
        stats = running.stop()
        assert stats.dead_lettered == 0 and stats.indexed == len(values)
        docs = [hit["_source"] | {"_id": hit["_id"]} for hit in _hits(client, names["prefix"])]
        assert sorted(d["_id"] for d in docs) == sorted(f"{names['topic']}+0+{n}" for n in range(len(values)))
        assert {t: sum(d["Type"] == t for d in docs) for t in types} == types
        seed0 = next(d for d in docs if d["Msg"] == "seed 0")
        assert seed0["Time"] == "2026-12-03T08:00:00.000+00:00"  # 16:00 in Asia/Shanghai
        zap0 = next(d for d in docs if d["Msg"] == "zap query failed 0")
        assert (zap0["FuncName"], zap0["Field"]) == ("project/db.go:88", {"error": "timeout"})

        found = CliRunner().invoke(
            main,
            [
                "search",
                "--json",
                "--level",
                "error",
                "--hosts",
                es_service.address,
                "--index-prefix",
                names["prefix"],
                "--since",
                "2000-01-01T00:00:00+00:00",
            ],
        )
        assert found.exit_code == 0, found.output
        assert sorted(orjson.loads(line)["Msg"] for line in found.stdout.splitlines()) == [
            f"zap query failed {i}" for i in range(4)
        ]

        # The same offsets shipped again (another group from the start): no new document.
        again = _ship_in_thread(
            kafka_service, es_service, {**names, "group": names["group"] + "-again"}, default_timezone="Asia/Shanghai"
        )
        wait_until(lambda: again.shipper.stats.duplicates == len(values), 60)
        again.stop()
        assert _count(client, names["prefix"]) == len(values)


def _hits(client: Any, prefix: str) -> list[dict[str, Any]]:
    from elasticsearch.helpers import scan

    client.indices.refresh(index=f"{prefix}-*")
    return list(scan(client, index=f"{prefix}-*", query={"query": {"match_all": {}}}))
