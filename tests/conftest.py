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
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
import structlog

import logpipe
from logpipe.kafkaclient import KafkaClient

REPO = Path(__file__).resolve().parents[1]

#: The Kafka client libraries the tests that talk to a broker run on: every choice of
#: ``LOGPIPE_KAFKA_CLIENT`` but ``auto``.
KAFKA_CLIENTS = [c for c in get_args(KafkaClient) if c != "auto"]


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_script(script: str, command: str, env: dict[str, str], timeout: float = 900) -> dict[str, str]:
    """Run scripts/<script> <command> with *env*; its ``key=value`` lines as a dict."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / script), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {command} failed:\n{done.stdout}\n{done.stderr}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@dataclass(frozen=True)
class SecureKafka:
    """A private broker with secured listeners (scripts/kafka.sh, LOGPIPE_SERVICES_KAFKA_SECURE=1)."""

    plaintext: str  #: PLAINTEXT bootstrap
    sasl_ssl: str  #: SASL_SSL bootstrap: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    ssl: str  #: SSL bootstrap that requires a client certificate
    mismatch: str  #: SASL_SSL bootstrap whose certificate names another host
    ca: Path
    client_cert: Path
    client_key: Path
    client_key_password: str
    username: str
    password: str


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A broker of the session's own (other ports and state dir: the shared broker is untouched)."""
    env = {
        "LOGPIPE_SERVICES_DIR": str(tmp_path_factory.mktemp("secure-broker")),
        "LOGPIPE_SERVICES_KAFKA_SECURE": "1",
        "LOGPIPE_SERVICES_KAFKA_PARTITIONS": "1",
        "LOGPIPE_SERVICES_KAFKA_PORT": str(_free_port()),
        "LOGPIPE_SERVICES_KAFKA_CONTROLLER_PORT": str(_free_port()),
        "LOGPIPE_SERVICES_KAFKA_SASL_SSL_PORT": str(_free_port()),
        "LOGPIPE_SERVICES_KAFKA_SSL_PORT": str(_free_port()),
        "LOGPIPE_SERVICES_KAFKA_MISMATCH_PORT": str(_free_port()),
    }
    out = _run_script("kafka.sh", "start", env)
    try:
        yield SecureKafka(
            plaintext=out["bootstrap"],
            sasl_ssl=out["secure_bootstrap"],
            ssl=out["ssl_bootstrap"],
            mismatch=out["mismatch_bootstrap"],
            ca=Path(out["ca"]),
            client_cert=Path(out["client_cert"]),
            client_key=Path(out["client_key"]),
            client_key_password=out["client_key_password"],
            username=out["sasl_username"],
            password=out["sasl_password"],
        )
    finally:
        _run_script("kafka.sh", "wipe", env)


@dataclass(frozen=True)
class EsFront:
    """nginx with TLS, basic auth and an API-key check in front of the Elasticsearch node (scripts/es-front.sh)."""

    url: str
    ca: Path
    user: str
    password: str
    api_key: str


@pytest.fixture(scope="session")
def es_front(es_service: Service) -> Iterator[EsFront]:
    """The front on a free port, before the session's Elasticsearch node; its state under .services/."""
    env = {
        # Not a pytest temp dir: those are private (0700) and nginx's workers run as nobody under root.
        "LOGPIPE_SERVICES_DIR": str(REPO / ".services" / f"test-{os.getpid()}"),
        "LOGPIPE_SERVICES_ES_FRONT_PORT": str(_free_port()),
        "LOGPIPE_SERVICES_ES_FRONT_UPSTREAM": es_service.address,
    }
    out = _run_script("es-front.sh", "start", env)
    try:
        yield EsFront(out["url"], Path(out["ca"]), out["user"], out["password"], out["api_key"])
    finally:
        _run_script("es-front.sh", "wipe", env)
        shutil.rmtree(env["LOGPIPE_SERVICES_DIR"], ignore_errors=True)


# -- Elasticsearch: what the index tests of several modules share --------------------------------------


@pytest.fixture
def client(es_service: Service) -> Iterator[Any]:
    """A client of the session's real node (modules with other needs define their own)."""
    from elasticsearch import Elasticsearch

    with Elasticsearch(es_service.address, request_timeout=30) as c:
        yield c


@pytest.fixture
def prefix(client: Any) -> Iterator[str]:
    """A fresh index prefix; its indices and template are deleted afterwards."""
    from logpipe import elasticsearch as es

    name = f"lptest-{uuid.uuid4().hex[:10]}"
    yield name
    client.options(ignore_status=404).indices.delete(index=f"{name}-*")
    client.options(ignore_status=404).indices.delete_index_template(name=es.template_name(name))


def es_settings(es_service: Service, prefix: str, **kw: Any) -> dict[str, Any]:
    """Elasticsearch options for the session's node under *prefix* (one node: no replicas)."""
    return {"hosts": (es_service.address,), "index_prefix": prefix, "replicas": 0, **kw}


def es_docs(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Every document under *prefix*, after a refresh."""
    from elasticsearch.helpers import scan

    client.indices.refresh(index=f"{prefix}-*")
    return list(scan(client, index=f"{prefix}-*", query={"query": {"match_all": {}}}))
