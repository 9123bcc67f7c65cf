"""The three-broker KRaft cluster of the fault tests, and the fault matrix they measure.

The ``cluster`` fixture runs ``scripts/kafka-cluster.sh`` (ports 21092-21097 by default, beside the
single broker of ``scripts/kafka.sh``): it starts the cluster once per session unless it already
runs, and stops it at the end only if it started it. ``healthy_cluster`` gives each test all three
nodes up with every replica in sync, whatever the test before killed.

Every test in this directory carries the ``cluster`` marker; ``make test`` leaves them out
(``-m "not cluster"`` in pyproject.toml's addopts) and ``make test-cluster`` runs them.

Each fault test adds a row to the fault matrix (``matrix.add``): the session writes them to
``fault-matrix.json`` in pytest's base temp dir (or ``$LOGPIPE_FAULT_MATRIX``) and prints them at the end.

A node can also die of something the test did not do (the JVM out of memory, the kernel's OOM
killer on a shared machine). ``NodeWatch`` notes when each node's process went away during a test;
a failed test's report carries that timeline, the test's own faults, and the last lines of the log
of any node that died without the test killing it, so a CI log alone says which it was. Such a
death is warned about, and a test that failed with it runs once more (``a_node_died_on_its_own``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, wait_until

SCRIPT = REPO / "scripts" / "kafka-cluster.sh"
STATE = Path(os.environ.get("LOGPIPE_SERVICES_DIR") or REPO / ".services") / "kafka-cluster"
NODES = (1, 2, 3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of tests/cluster/ with ``cluster``, so ``-m`` selects or leaves out the group, and let
    pytest-rerunfailures run one again if it failed on a cluster that lost a node the test did not touch."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.flaky(reruns=1, condition=a_node_died_on_its_own))


def node_pid(node: int) -> int | None:
    """The pid of *node*'s JVM if its pid file names a live process."""
    try:
        pid = int((STATE / f"node{node}" / "kafka.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def log_tail(node: int, lines: int = 15, width: int = 240) -> str:
    """The last *lines* of *node*'s kafka.log (each cut at *width*), and the JVM's crash reports if it wrote any.

    A JVM out of memory says so on its last line; one the kernel killed just stops mid-log.
    """
    directory = STATE / f"node{node}"
    try:
        tail = [line[:width] for line in (directory / "kafka.log").read_text(errors="replace").splitlines()[-lines:]]
    except OSError as exc:
        tail = [f"(no log: {exc})"]
    crashes = [f"JVM crash report: {path}" for path in sorted(directory.glob("hs_err_pid*.log"))]
    return "\n".join([*crashes, *tail])


@dataclass
class Cluster:
    """The cluster run by scripts/kafka-cluster.sh; ``address`` is its three-broker bootstrap list.

    ``faults`` lists what the current test did to the nodes (the script's arguments: ``("kill", "2")``,
    ``("restart",)``) and when, on the monotonic clock; ``heal`` clears it.
    """

    address: str = ""
    faults: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 300) -> str:
        if args[0] in ("kill", "stop-node", "start-node", "restart"):
            self.faults.append((time.monotonic(), args))
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
        self.faults.clear()

    def caused(self, node: int) -> bool:
        """Whether this test killed, stopped or restarted *node* (so its going away is the fault under test)."""
        return any(
            args[0] in ("kill", "stop-node", "restart") and args[1:] in ((str(node),), ())  # restart: every node
            for _, args in self.faults
        )


class NodeWatch:
    """Notes, every 0.2 s on a thread of its own, when each node's JVM went away during one test."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.started = time.monotonic()
        self.gone: dict[int, float] = {}  # node -> monotonic time its process was first seen gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._look()

    def _look(self) -> None:
        for node in NODES:
            if node_pid(node) is None:
                self.gone.setdefault(node, time.monotonic())
            else:
                self.gone.pop(node, None)  # started again (a restart): only a death that lasts counts

    def stop(self) -> None:
        """Stop watching, after one last look (what the test's end left behind)."""
        self._stop.set()
        self._thread.join(5)
        self._look()

    def unexpected(self) -> list[int]:
        """Nodes that are down (now, or when the watch stopped) although the test did nothing to them."""
        if not self._stop.is_set():
            self._look()
        return [node for node in sorted(self.gone) if not self.cluster.caused(node)]

    def report(self) -> str:
        """The test's faults, each node's state, and the log of every node that died on its own."""
        if not self._stop.is_set():
            self._look()

        def at(t: float) -> str:
            return f"{t - self.started:6.1f} s"

        lines = [f"{at(t)}  the test ran: kafka-cluster.sh {' '.join(args)}" for t, args in self.cluster.faults]
        for node in NODES:
            if node not in self.gone:
                lines.append(f"node {node}: running (pid {node_pid(node)})")
            elif self.cluster.caused(node):
                lines.append(f"node {node}: down since {at(self.gone[node]).strip()} (the test's fault)")
            else:
                lines.append(f"node {node}: down since {at(self.gone[node]).strip()}, and the test did not touch it;")
                lines.append(f"  the last lines of {STATE / f'node{node}' / 'kafka.log'}:")
                lines.extend("  | " + line for line in log_tail(node).splitlines())
        return "\n".join(lines)


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


WATCH = pytest.StashKey[NodeWatch]()
_WATCHES: list[NodeWatch] = []  # the current test's, last


def a_node_died_on_its_own() -> bool:
    """Whether the test that just ran lost a node it did not kill, stop or restart.

    Then its outcome says nothing about logpipe (a second node down breaks ``min.insync.replicas``
    and the quorum the test relies on), so a failure runs once more (pytest-rerunfailures' condition,
    evaluated after the attempt's teardown); the warning and the failure's report say which node and how.
    """
    return bool(_WATCHES) and bool(_WATCHES[-1].unexpected())


@pytest.fixture
def healthy_cluster(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The cluster with its three nodes up and in sync before the test (the next test, or the session's end, heals
    what this one broke). A node that dies during the test without the test killing it is reported."""
    cluster.heal()
    watch = request.node.stash[WATCH] = NodeWatch(cluster)
    _WATCHES[:] = [watch]
    yield cluster
    watch.stop()
    if watch.unexpected():
        warnings.warn(f"a cluster node died on its own during {request.node.name}:\n{watch.report()}", stacklevel=1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed cluster test's report ends with what NodeWatch saw (shown under the failure, in CI's log too)."""
    report = yield
    watch = item.stash.get(WATCH, None)
    if report.failed and watch is not None:
        report.sections.append(("cluster nodes", watch.report()))
    return report


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
