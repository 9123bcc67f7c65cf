"""Fault tests against the session's single broker and node (no cluster needed), and their fault matrix rows.

What they break sits between logpipe and the shared servers (`proxies.FaultyElasticsearch`,
`proxies.TcpGate`), or is logpipe itself (SIGKILL of ``logpipe tail`` / ``logpipe ship``) or a
filesystem of the test's own (a small tmpfs): the shared broker and node are never stopped.

Each test adds a row (``matrix.add``); the session prints them and writes them to
``fault-matrix-single.json`` in pytest's base temp dir (or ``$LOGPIPE_FAULT_MATRIX_SINGLE``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.conftest import FaultMatrix
from conftest import Service, wait_until

_MATRIX = FaultMatrix()


@pytest.fixture
def matrix() -> FaultMatrix:
    return _MATRIX


def unique(name: str) -> str:
    return f"lpfault-{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def es(es_service: Service) -> Iterator[Any]:
    """A client of the real node (not of the faulty proxy): what the test checks with."""
    from elasticsearch import Elasticsearch

    with Elasticsearch(es_service.address, request_timeout=30, max_retries=0) as client:
        yield client


@pytest.fixture
def prefix(es: Any) -> Iterator[str]:
    """A fresh index prefix; its indices and template are deleted afterwards."""
    name = unique("es")
    yield name
    es.options(ignore_status=404).indices.delete(index=f"{name}-*")
    es.options(ignore_status=404).indices.delete_index_template(name=f"logpipe-{name}")


@pytest.fixture
def topic(kafka_service: Service, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh topic on the shared broker, 3 partitions, made before the test (a consumer that subscribes
    to a topic not there yet may not see it for minutes); deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    name = unique(request.node.name.split("[")[0].removeprefix("test_")[:30].replace("_", "-"))
    admin = KafkaAdminClient(bootstrap_servers=kafka_service.address, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
        wait_until(lambda: name in admin.list_topics(), timeout=30)
        yield name
        existing = [t for t in admin.list_topics() if t.startswith(name)]
        if existing:
            admin.delete_topics(existing)
    finally:
        admin.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _MATRIX.rows:
        return
    target = os.environ.get("LOGPIPE_FAULT_MATRIX_SINGLE")
    base = Path(str(config._tmp_path_factory.getbasetemp()))  # type: ignore[attr-defined]
    path = Path(target) if target else base / "fault-matrix-single.json"
    path.write_text(json.dumps(_MATRIX.rows, indent=2) + "\n")
    terminalreporter.section("fault matrix (single broker and node)")
    for row in _MATRIX.rows:
        terminalreporter.line(json.dumps(row))
    terminalreporter.line(f"written to {path}")
