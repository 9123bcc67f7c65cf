"""The campaign's own instrument: NodeWatch tells a node the test killed from one that died on its own."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import wait_until

from .conftest import STATE, WATCH, Cluster, NodeWatch, node_pid


def test_a_node_that_dies_on_its_own_is_reported_with_its_log(
    healthy_cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    watch: NodeWatch = request.node.stash[WATCH]
    pid = node_pid(3)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # behind the harness's back, as the kernel's OOM killer would
    wait_until(lambda: 3 in watch.gone, timeout=10)
    healthy_cluster.kill(2)  # the test's own fault
    wait_until(lambda: 2 in watch.gone, timeout=10)

    assert watch.unexpected() == [3]
    report = watch.report()
    assert "kafka-cluster.sh kill 2" in report
    assert "node 1: running" in report
    assert "node 2: down since" in report and "(the test's fault)" in report
    assert "node 3: down since" in report and "the test did not touch it" in report
    last_line = (STATE / "node3" / "kafka.log").read_text().splitlines()[-1]
    assert f"  | {last_line[:200]}" in report  # node 3's log, which says how it ended

    healthy_cluster.start_node(3)  # back before the fixture's end: no warning for this test
    wait_until(lambda: 3 not in watch.gone, timeout=10)
    assert watch.unexpected() == []
