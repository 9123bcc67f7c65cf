"""The three-broker KRaft cluster of the fault tests, and the fault matrix they measure.

The ``cluster`` fixture runs ``scripts/kafka-cluster.sh`` (ports 21092-21097 by default, beside the
single broker of ``scripts/kafka.sh``): it starts the cluster once per session unless it already
runs, and stops it at the end only if it started it. ``healthy_cluster`` gives each test all three
nodes up with every replica in sync, whatever the test before killed.

Every test in this directory carries the ``cluster`` marker; ``make test`` leaves them out
(``-m "not cluster"`` in pyproject.toml's addopts) and ``make test-cluster`` runs them.

Each fault test adds a row to the fault matrix (``matrix.add``): the session writes them to
``fault-matrix.json`` in pytest's base temp dir (or ``$LOGPIPE_FAULT_MATRIX``) and prints them at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, wait_until

SCRIPT = REPO / "scripts" / "kafka-cluster.sh"
NODES = (1, 2, 3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of tests/cluster/ with ``cluster``, so ``-m`` selects or leaves out the group."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.cluster)


@dataclass
class Cluster:
    """The cluster run by scripts/kafka-cluster.sh; ``address`` is its three-broker bootstrap list."""

    address: str = ""

    def run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"kafka-cluster.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def kill(self, node: int) -> None:
        """kill -9: the node crashes, no controlled shutdown."""
        self.run("kill", str(node))

    def start_node(self, node: int) -> None:
        self.run("start-node", str(node))

    def create_topic(self, name: str, partitions: int) -> None:
        """Replication factor 3, min.insync.replicas=2; returns once every partition has 3 in-sync replicas."""
        self.run("create-topic", name, str(partitions))

    def admin(self) -> Any:
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.address, request_timeout_ms=10_000)

    def partitions(self, topic: str) -> dict[int, dict[str, Any]]:
        """partition -> {"leader_id", "isr_nodes", ...} as the cluster describes it now."""
        admin = self.admin()
        try:
            (described,) = admin.describe_topics([topic])
            return {p["partition_index"]: p for p in described["partitions"]}
        finally:
            admin.close()

    def leader(self, topic: str, partition: int = 0) -> int:
        return int(self.partitions(topic)[partition]["leader_id"])

    def in_sync(self) -> bool:
        return subprocess.run(["bash", str(SCRIPT), "in-sync"], capture_output=True).returncode == 0

    def delete_topics(self, *topics: str) -> None:
        admin = self.admin()
        try:
            existing = [t for t in admin.list_topics() if t.startswith(topics)]
            if existing:
                admin.delete_topics(existing, raise_errors=False)
        finally:
            admin.close()

    def heal(self) -> None:
        """All three nodes running (those a test killed are started again) and every replica in sync."""
        out = self.run("start", timeout=600)
        self.address = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)["bootstrap"]
        wait_until(self.in_sync, timeout=120, interval=0.5)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The three-node cluster, started for the session unless it was already running."""
    was_running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    cluster = Cluster()
    cluster.heal()
    try:
        yield cluster
    finally:
        if was_running:
            cluster.heal()  # left as it was found: whole again
        else:
            cluster.run("stop")


@pytest.fixture
def healthy_cluster(cluster: Cluster) -> Cluster:
    """The cluster with its three nodes up and in sync before the test (the next test, or the session's end, heals
    what this one broke)."""
    cluster.heal()
    return cluster


@dataclass
class FaultMatrix:
    """Rows of docs/reliability.md's fault matrix, as the tests measured them."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, fault: str, **figures: Any) -> None:
        row = {"fault": fault, **figures}
        self.rows.append(row)
        print(f"\n[fault matrix] {json.dumps(row)}")


_MATRIX = FaultMatrix()


@pytest.fixture
def matrix() -> FaultMatrix:
    return _MATRIX


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _MATRIX.rows:
        return
    target = os.environ.get("LOGPIPE_FAULT_MATRIX")
    path = Path(target) if target else Path(str(config._tmp_path_factory.getbasetemp())) / "fault-matrix.json"  # type: ignore[attr-defined]
    path.write_text(json.dumps(_MATRIX.rows, indent=2) + "\n")
    terminalreporter.section("fault matrix")
    for row in _MATRIX.rows:
        terminalreporter.line(json.dumps(row))
    terminalreporter.line(f"written to {path}")
