"""Elasticsearch answering 429 (bulk queue full) and 503 mid-stream: `logpipe ship` and the ``elasticsearch`` exporter.

A `FaultyElasticsearch` proxy stands before the session's node. While the application logs, the
proxy starts refusing ``_bulk``: the whole request (429 ``es_rejected_execution_exception``, or 503),
or half of its documents with per-item 429s inside a 200 answer (a node whose write queue is full).
It stops once logpipe has felt it (requests refused, retries made, records spooled), and each test
ends with the same check: every record that logpipe accepted is in Elasticsearch exactly once, and
nothing was dead-lettered (a 429 or 503 is worth retrying, never a refusal for good).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import logpipe
from cluster.conftest import FaultMatrix
from cluster.test_faults import LOGPIPE, Chaos, assert_accepted_all, es_count, es_ids, log_paced, seqs_on
from conftest import Service, consume_all, wait_until
from logpipe.exporters.spool import SpoolExporter

from .proxies import Fault, FaultyElasticsearch

pytestmark = [pytest.mark.slow, pytest.mark.elasticsearch]

FAULTS: list[Fault] = ["429", "503", "items-429"]


@pytest.fixture
def proxy(es_service: Service) -> Iterator[FaultyElasticsearch]:
    faulty = FaultyElasticsearch(es_service.address)
    try:
        yield faulty
    finally:
        faulty.close()


def assert_once_each(es: Any, prefix: str, ids: set[str]) -> list[tuple[str, str]]:
    """Every Id of *ids* is exactly one document under *prefix*, whose ``_id`` is the Id; returns the documents."""
    docs = es_ids(es, prefix)
    distinct = {record_id for _, record_id in docs}
    assert len(docs) == len(distinct), f"{len(docs) - len(distinct)} duplicate documents"
    assert distinct == ids, f"{len(ids - distinct)} records missing, {len(distinct - ids)} unexpected"
    assert all(doc_id == record_id for doc_id, record_id in docs)
    return docs


@pytest.mark.kafka
@pytest.mark.parametrize("fault", FAULTS)
def test_ship_through_429_and_503(
    fault: Fault,
    kafka_service: Service,
    proxy: FaultyElasticsearch,
    es: Any,
    prefix: str,
    topic: str,
    matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    """`logpipe ship` retries refused bulk requests and items with backoff: each record one document, none dead."""
    out = tmp_path / "ship.log"
    dead = tmp_path / "dead.jsonl"
    command = [str(LOGPIPE), "ship", "--quiet", "-b", kafka_service.address, "-t", topic, "--group", topic]
    command += ["--es-hosts", proxy.url, "--index-prefix", prefix, "--batch-size", "1000"]
    command += ["--dead-letter", f"file:{dead}"]
    env = {
        **os.environ,
        "LOGPIPE_ELASTICSEARCH_REPLICAS": "0",
        "LOGPIPE_ELASTICSEARCH_CHUNK_SIZE": "200",
        "LOGPIPE_ELASTICSEARCH_BACKOFF": "0.2",
        "LOGPIPE_ELASTICSEARCH_MAX_BACKOFF": "2",
    }
    pipeline = logpipe.configure(
        exporter="kafka",
        exporter_options={
            "kafka": {"bootstrap_servers": kafka_service.address, "topic": topic, "acks": "all"},
            "spool": {"dir": tmp_path / "spool", "replay_interval": 0.2},
        },
        local_render="none",
    )
    structlog.configure(processors=pipeline.processors())
    log = structlog.get_logger()
    n, rate = 12_000, 2_000.0
    window: dict[str, Any] = {}

    def overload() -> None:
        wait_until(lambda: es_count(es, prefix) >= 1_000, timeout=60, interval=0.05)
        proxy.inject(fault)
        window["on"] = time.monotonic()
        # Lifted once the shipper has been refused a few times and so has waited through its backoff.
        wait_until(lambda: proxy.spoiled >= 6 and time.monotonic() - window["on"] >= 3.0, timeout=60)
        proxy.inject(None)
        window["off"] = time.monotonic()

    with open(out, "wb") as sink:
        shipper = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    chaos = Chaos(overload)
    started = time.monotonic()
    try:
        chaos.trigger()
        logged, _ = log_paced(log, rate, n=n, at={})
        assert logpipe.flush(60)
        assert_accepted_all(logpipe.stats()["kafka"], n)
        chaos.join()
        wait_until(lambda: es_count(es, prefix) >= n, timeout=120, interval=0.5)
    finally:
        shipper.send_signal(signal.SIGTERM)
        try:
            code = shipper.wait(60)
        except subprocess.TimeoutExpired:
            shipper.kill()
            raise
    summary = out.read_text()
    assert code == 0, summary
    assert "Traceback" not in summary, summary
    messages = consume_all(kafka_service.address, topic)
    by_seq, ids = seqs_on(messages)
    assert set(by_seq) == set(range(n))
    docs = assert_once_each(es, prefix, set(ids))
    assert not dead.exists() or not dead.read_bytes(), "a 429/503 must never be dead-lettered"
    retries = sum(int(m) for m in re.findall(r"retries=(\d+)", summary))
    assert retries > 0, summary
    indexed = sum(int(m) for m in re.findall(r"indexed=(\d+)", summary))
    duplicates = sum(int(m) for m in re.findall(r"duplicates=(\d+)", summary))
    matrix.add(
        f"Elasticsearch answers {describe(fault)} under logpipe ship",
        test=f"test_ship_through_429_and_503[{fault}]",
        logged=n,
        rate=rate,
        lost=n - len(by_seq),
        kafka_messages=len(messages),
        kafka_duplicates=len(messages) - len(ids),
        es_documents=len(docs),
        es_duplicates=len(docs) - len({record_id for _, record_id in docs}),
        dead_lettered=0,
        fault_s=round(window["off"] - window["on"], 1),
        bulk_requests_refused=proxy.refused_requests,
        items_refused=proxy.refused_items,
        ship_retries=retries,
        ship_indexed=indexed,
        ship_duplicates_409=duplicates,
        seconds=round(time.monotonic() - started, 1),
    )


def es_seqs(es: Any, prefix: str) -> list[tuple[str, str, int]]:
    """(_id, Id, Field.seq) of every document under *prefix*."""
    from elasticsearch.helpers import scan

    es.indices.refresh(index=f"{prefix}-*")
    hits = scan(es, index=f"{prefix}-*", query={"_source": ["Id", "Field"]})
    return [(h["_id"], h["_source"]["Id"], h["_source"]["Field"]["seq"]) for h in hits]


def describe(fault: Fault) -> str:
    return {
        "429": "429 to whole bulk requests",
        "503": "503 to whole bulk requests",
        "items-429": "per-item 429 (half of each bulk, in a 200)",
    }[fault]


@pytest.mark.parametrize("fault", FAULTS)
def test_exporter_through_429_and_503(
    fault: Fault,
    proxy: FaultyElasticsearch,
    es: Any,
    prefix: str,
    matrix: FaultMatrix,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The ``elasticsearch`` exporter retries with backoff; what exhausts its budget is spooled and replayed, once."""
    pipeline = logpipe.configure(
        exporter="elasticsearch",
        exporter_options={
            "elasticsearch": {
                "hosts": (proxy.url,),
                "index_prefix": prefix,
                "replicas": 0,
                "chunk_size": 200,
                "max_retries": 2,
                "backoff": 0.1,
                "max_backoff": 0.4,
            },
            "spool": {"dir": tmp_path / "spool", "replay_interval": 0.2},
        },
        local_render="none",
    )
    structlog.configure(processors=pipeline.processors())
    log = structlog.get_logger()
    spool = getattr(pipeline.dispatchers[0].fallback, "inner", None)
    assert isinstance(spool, SpoolExporter)
    n, rate = 10_000, 2_000.0
    window: dict[str, Any] = {}

    def overload() -> None:
        proxy.inject(fault)
        window["on"] = time.monotonic()
        # Until some batches ran out of retries (0.1 + 0.2 s) and went to the spool, and its replay was refused too.
        wait_until(
            lambda: spool.stats().written >= 500 and proxy.spoiled >= 10 and time.monotonic() - window["on"] >= 2.0,
            timeout=60,
        )
        proxy.inject(None)
        window["off"] = time.monotonic()

    chaos = Chaos(overload)
    started = time.monotonic()
    logged, slowest = log_paced(log, rate, n=n, at={n // 5: chaos.trigger})
    chaos.join()
    assert logpipe.flush(60)
    wait_until(lambda: spool.stats().pending_bytes == 0, timeout=90, interval=0.2)
    stats = logpipe.stats()["elasticsearch"]
    assert_accepted_all(stats, n)
    spooled = spool.stats()
    assert spooled.written == stats.spilled > 0
    assert spooled.replayed == spooled.written and (spooled.dropped, spooled.rejected) == (0, 0), spooled
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    said = [line for line in err.splitlines() if "not delivered after 2 retries" in line]
    assert said, err  # the user is told, whether the whole request or single items were refused
    assert not (tmp_path / "logs" / "dead-letter.jsonl").exists(), "a 429/503 must never be dead-lettered"
    assert not (tmp_path / "spool" / "elasticsearch" / "rejected.ndjson").exists()

    docs = es_seqs(es, prefix)
    distinct = {record_id for _, record_id, _ in docs}
    assert len(docs) == len(distinct), f"{len(docs) - len(distinct)} duplicate documents"
    assert sorted(seq for _, _, seq in docs) == list(range(n))  # every record, once
    assert all(doc_id == record_id for doc_id, record_id, _ in docs)
    matrix.add(
        f"Elasticsearch answers {describe(fault)} under the elasticsearch exporter",
        test=f"test_exporter_through_429_and_503[{fault}]",
        logged=n,
        rate=rate,
        lost=n - len(distinct),
        es_documents=len(docs),
        es_duplicates=len(docs) - len(distinct),
        dead_lettered=0,
        fault_s=round(window["off"] - window["on"], 1),
        bulk_requests_refused=proxy.refused_requests,
        items_refused=proxy.refused_items,
        sent_directly=stats.sent,
        spooled_then_replayed=spooled.replayed,
        slowest_log_call_ms=round(slowest * 1000, 1),
        stderr=said[0],
        seconds=round(time.monotonic() - started, 1),
    )
