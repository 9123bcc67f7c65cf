"""Smoke test of the benchmark suite: the call-cost workload in --quick mode.

It checks the report's structure only (a row per peer, ratios computed from
figures of the same run, positive numbers); it asserts no timing, because the
benchmark reports and does not gate CI.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Peers whose libraries logpipe itself depends on: always measured.
CORE_PEERS = {"logpipe", "logpipe_discard", "structlog", "otel", "otel_discard"}
ALL_PEERS = {
    "logpipe",
    "logpipe_thread",
    "logpipe_discard",
    "logpipe_confluent",
    "logpipe_kafka_python",
    "structlog",
    "stdlib",
    "otel",
    "otel_discard",
    "logstash",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "LOGPIPE_BENCH_CALL_EXPORTER": "memory",  # no broker needed: the enqueue path is the same
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "call_cost", "--quick", "--fresh", "-q", "--out", str(out)],
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Cost of one log call" in done.stdout  # the table was printed
    doc = json.loads(out.with_suffix(".json").read_text())
    doc["markdown"] = out.read_text()
    return doc


def _section(doc: dict) -> dict:
    (section,) = [s for s in doc["sections"] if s["key"] == "call_cost"]
    return section


def test_a_row_for_every_peer(report: dict) -> None:
    section = _section(report)
    assert not section["skipped"]
    keys = {row.get("key") or row["peer"] for row in section["rows"]}
    assert keys == ALL_PEERS
    for row in section["rows"]:
        if row.get("skipped"):
            assert (row.get("key") or row["peer"]) not in CORE_PEERS, row
            assert row["skipped"].strip()  # says why


def test_figures_are_positive_and_ratios_come_from_the_same_run(report: dict) -> None:
    section = _section(report)
    figures = section["extra"]["figures"]
    per_round = section["extra"]["per_round"]
    rounds = section["extra"]["rounds"]
    assert set(figures) >= CORE_PEERS
    for key, fig in figures.items():
        assert fig["median_ns"] > 0, key
        assert fig["p99_ns"] >= fig["median_ns"], key
        assert fig["cpu_ns_per_event"] > 0, key
        assert len(per_round[key]) == rounds
        # the ratio is the median of per-round ratios to structlog's rounds of this very run
        expected = statistics.median(
            a["median"] / b["median"] for a, b in zip(per_round[key], per_round["structlog"], strict=True)
        )
        assert fig["ratio"] == pytest.approx(expected)
    assert figures["structlog"]["ratio"] == pytest.approx(1.0)


def test_targets_are_judged_not_enforced(report: dict) -> None:
    section = _section(report)
    texts = " ".join(t["text"] for t in section["targets"])
    assert "1.3x" in texts and "OpenTelemetry" in texts and "p99" in texts and "CPU per event" in texts
    assert all(t["met"] in (True, False) for t in section["targets"])


def test_markdown_report(report: dict) -> None:
    md = report["markdown"]
    assert md.startswith("# Benchmarks")
    assert "## Machine" in md and "Python" in md and "CPU" in md
    assert "make bench" in md
    assert "| peer | median ns |" in md
    assert report["machine"]["cores (nproc)"].isdigit()


def test_a_rerun_workload_leaves_the_runs_it_superseded() -> None:
    """The runs table names, for each workload, the one run its figures came from."""
    sys.path.insert(0, str(REPO))
    from bench.report import superseded

    runs = [
        {"workloads": ["call_cost", "ship_scale", "tail_throughput"], "started": "12:49"},
        {"workloads": ["tail_throughput"], "started": "13:16"},
    ]
    kept = superseded(runs, ["ship_scale", "tail_throughput"])
    assert kept == [{"workloads": ["call_cost"], "started": "12:49"}]
    assert runs[0]["workloads"] == ["call_cost", "ship_scale", "tail_throughput"]  # the input is left as it was
