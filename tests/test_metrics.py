"""Tests for logpipe.metrics: ``/metrics`` of ``logpipe ship`` and ``logpipe tail`` scraped while they work
against the real broker and node, and the library's counters as OpenTelemetry metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import logpipe
from conftest import KAFKA_CLIENTS, Service, wait_until
from logpipe import elasticsearch as es
from logpipe.metrics import parse_address, publish_stats
from logpipe.record import make_record
from logpipe.spool import Spool
from logpipe.testing import InMemoryExporter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, list[Any]]:
    """``/metrics`` parsed by Prometheus' own text parser: family name -> samples."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[Any]], sample: str, **labels: str) -> float | None:
    for samples in families.values():
        for s in samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def scraped(port: int, sample: str, **labels: str) -> float | None:
    try:
        return value(scrape(port), sample, **labels)
    except OSError:
        return None  # not listening yet


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    return subprocess.Popen(
        [sys.executable, "-c", "from logpipe.cli import main; main()", *args],
        env={**clean, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    return err.decode()


class TestAddress:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("0.0.0.0", 9464)), ("[::1]:80", ("::1", 80))],
    )
    def test_forms(self, text: str, expected: tuple[str, int]) -> None:
        assert parse_address(text) == expected

    @pytest.mark.parametrize("text", ["9464", "host", "host:99999", "a:b"])
    def test_bad(self, text: str) -> None:
        with pytest.raises(ValueError, match="HOST:PORT|port"):
            parse_address(text)

    def test_cli_names_the_flag_and_variable(self) -> None:
        from click.testing import CliRunner

        from logpipe.cli import main

        result = CliRunner().invoke(main, ["ship", "-t", "x", "--metrics-address", "nope"])
        assert result.exit_code == 2
        assert "--metrics-address (LOGPIPE_SHIP_METRICS_ADDRESS)" in result.output


@pytest.fixture
def topic(kafka_service: Service) -> str:
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"lpmetrics-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_service.address)
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    admin.close()
    return name


@pytest.fixture
def prefix(es_service: Service) -> Iterator[str]:
    from elasticsearch import Elasticsearch

    name = f"lpmetrics-{uuid.uuid4().hex[:8]}"
    yield name
    with Elasticsearch(es_service.address) as client:
        client.options(ignore_status=404).indices.delete(index=f"{name}-*")
        client.options(ignore_status=404).indices.delete_index_template(name=es.template_name(name))


@pytest.mark.kafka
@pytest.mark.elasticsearch
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_ship_metrics_while_shipping(
    client: str, kafka_service: Service, es_service: Service, topic: str, prefix: str, tmp_path: Path
) -> None:
    """Counters, per-partition lag and the bulk histogram on /metrics match what the shipper did."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_service.address, acks="all")
    for n in range(300):
        producer.send(topic, make_record(type="info", msg=f"m{n}").payload, partition=n % 2)
    producer.send(topic, b"not json: indexed as a text record", partition=0)
    producer.send(topic, b"x" * 5000, partition=0)  # over --max-message-bytes: the one dead letter
    producer.flush()
    producer.close()
    port = free_port()
    proc = run_cli(
        "ship", "-t", topic, "-b", kafka_service.address, "--group", f"{topic}-g", "--es-hosts", es_service.address,
        "--index-prefix", prefix, "--dead-letter", f"file:{tmp_path / 'dlq.jsonl'}", "--status-interval", "0.2",
        "--max-message-bytes", "4096",
        "--metrics-address", f"127.0.0.1:{port}", "-q",
        env={"LOGPIPE_ELASTICSEARCH_REPLICAS": "0", "LOGPIPE_SHIP_KAFKA_CLIENT": client}, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: scraped(port, "logpipe_ship_indexed_total") == 301, timeout=90)
        wait_until(lambda: scraped(port, "logpipe_ship_consumer_lag", topic=topic, partition="1") == 0, timeout=30)
        families = scrape(port)
    finally:
        stop(proc)
    assert value(families, "logpipe_ship_consumed_total") == 302
    assert value(families, "logpipe_ship_dead_lettered_total") == 1
    assert value(families, "logpipe_ship_errors_total", kind="malformed") == 1
    assert value(families, "logpipe_ship_duplicates_total") == 0
    assert value(families, "logpipe_ship_consumer_lag", topic=topic, partition="0") == 0
    assert (value(families, "logpipe_ship_bulk_seconds_count") or 0) >= 1
    assert value(families, "logpipe_ship_bulk_seconds_bucket", le="+Inf") == value(
        families, "logpipe_ship_bulk_seconds_count"
    )


@pytest.mark.kafka
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_tail_metrics_while_tailing(client: str, kafka_service: Service, topic: str, tmp_path: Path) -> None:
    """Lines sent, bytes behind each file's end (0 once caught up, then growing) and the spool gauges."""
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(f"plain line {n}\n".encode() for n in range(200)))
    spool = Spool(tmp_path / "spool" / "kafka")
    spool.append([make_record(type="info", msg="waiting").payload] * 7)
    spool.close()
    port = free_port()
    proc = run_cli(
        "tail", str(log), "-t", topic, "-b", kafka_service.address, "--registry", str(tmp_path / "reg.json"),
        "--status-interval", "0.2", "--metrics-address", f"127.0.0.1:{port}", "-q",
        env={
            "LOGPIPE_SPOOL_DIR": str(tmp_path / "spool"), "LOGPIPE_TAIL_REGISTRY_FLUSH": "0.1",
            "LOGPIPE_KAFKA_CLIENT": client,
        }, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: scraped(port, "logpipe_tail_sent_total") == 200, timeout=60)
        path = str(log)
        wait_until(lambda: scraped(port, "logpipe_tail_file_behind_bytes", path=path) == 0, timeout=30)
        families = scrape(port)
    finally:
        stop(proc)
    assert value(families, "logpipe_tail_lines_read_total") == 200
    assert value(families, "logpipe_tail_wrapped_total") == 200
    assert value(families, "logpipe_tail_file_offset_bytes", path=path) == log.stat().st_size
    assert (value(families, "logpipe_tail_batch_seconds_count") or 0) >= 1
    assert value(families, "logpipe_spool_records", exporter="kafka") == 7
    assert (value(families, "logpipe_spool_bytes", exporter="kafka") or 0) > 0
    assert value(families, "logpipe_tail_errors_total", kind="refused_by_kafka") == 0


class TestOpenTelemetry:
    def test_stats_published_through_the_applications_provider(self) -> None:
        """logpipe.stats() counters show up in the SDK's InMemoryMetricReader, labelled by exporter."""
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        pipeline = logpipe.configure(exporter=[InMemoryExporter()])
        assert publish_stats(provider) is True
        structlog.configure(processors=pipeline.processors())
        log = structlog.get_logger()
        for n in range(3):
            log.info("hello", n=n)
        assert logpipe.flush(10)
        points: dict[str, Any] = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        points[(metric.name, point.attributes.get("exporter"))] = point.value
        assert points[("logpipe.records.sent", "InMemoryExporter")] == 3
        assert points[("logpipe.records.dropped", "InMemoryExporter")] == 0
        assert ("logpipe.queue.records", "InMemoryExporter") in points
        provider.shutdown()

    def test_nothing_without_a_configured_provider(self) -> None:
        """The API's default (proxy) provider means the application has none: logpipe installs nothing."""
        from opentelemetry.metrics import NoOpMeterProvider

        assert publish_stats() is False or _global_provider_is_real()
        assert publish_stats(NoOpMeterProvider()) is False


def _global_provider_is_real() -> bool:
    from opentelemetry import metrics

    return type(metrics.get_meter_provider()).__name__ != "ProxyMeterProvider"
