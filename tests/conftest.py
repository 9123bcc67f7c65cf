"""Shared fixtures: real servers for integration tests, a fresh pipeline per test.

The Kafka broker and the Elasticsearch node are real processes started by the
project's own scripts (``scripts/kafka.sh``, ``scripts/elasticsearch.sh``).
A fixture starts its server once per session, unless one is already running
(``start`` is idempotent), and stops it at the end only if it started it.
Set ``LOGPIPE_TEST_KAFKA_BOOTSTRAP`` / ``LOGPIPE_TEST_ES_URL`` to use servers
that are managed elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

import logpipe

REPO = Path(__file__).resolve().parents[1]


def pytest_report_header() -> str:
    """Say which clock the run saw: CI runs the suite on a normal clock and on a fresh-boot one."""
    return f"monotonic clock: {time.monotonic():.0f} s since boot"


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05) -> object:
    """Poll *predicate* until it returns something truthy; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def consume_all(address: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every message of *topic*, read from the beginning up to the end offsets of its partitions.

    Without a consumer group, so what a test reads never depends on what an
    earlier test (or run) committed.
    """
    from kafka import KafkaConsumer, TopicPartition  # only the Kafka tests need the client

    consumer = KafkaConsumer(bootstrap_servers=address, enable_auto_commit=False, group_id=None)
    try:
        partitions = wait_until(lambda: consumer.partitions_for_topic(topic), timeout=timeout)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]  # type: ignore[attr-defined]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in assigned):
            assert time.monotonic() < deadline, f"topic {topic} not read to its end within {timeout}s"
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        return messages
    finally:
        consumer.close()


@dataclass
class Service:
    """A real server run by one of the scripts under scripts/."""

    script: Path
    address: str

    def run(self, command: str, timeout: float = 300) -> str:
        done = subprocess.run(
            ["bash", str(self.script), command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.script.name} {command} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def stop(self) -> None:
        self.run("stop")

    def start(self) -> None:
        self.run("start")

    def running(self) -> bool:
        return subprocess.run(["bash", str(self.script), "status"], capture_output=True).returncode == 0


def _service(script: str, env_var: str, key: str) -> Iterator[Service]:
    preset = os.environ.get(env_var)
    path = REPO / "scripts" / script
    if preset:
        yield Service(path, preset)
        return
    was_running = subprocess.run(["bash", str(path), "status"], capture_output=True).returncode == 0
    service = Service(path, "")
    out = service.run("start", timeout=900)
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    service.address = values[key]
    try:
        yield service
    finally:
        if not was_running:
            service.stop()


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[Service]:
    """The real Kafka broker; ``.address`` is its bootstrap ``host:port``."""
    yield from _service("kafka.sh", "LOGPIPE_TEST_KAFKA_BOOTSTRAP", "bootstrap")


@pytest.fixture(scope="session")
def es_service() -> Iterator[Service]:
    """The real Elasticsearch node; ``.address`` is its ``http://host:port`` URL."""
    yield from _service("elasticsearch.sh", "LOGPIPE_TEST_ES_URL", "url")


@pytest.fixture(autouse=True)
def _isolated_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from structlog's defaults, in its own directory, with no LOGPIPE_* env."""
    for name in list(os.environ):
        if name.startswith("LOGPIPE_") and not name.startswith(("LOGPIPE_TEST_", "LOGPIPE_SERVICES_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    structlog.reset_defaults()
    yield
    logpipe.shutdown(timeout=5.0)
    structlog.reset_defaults()
