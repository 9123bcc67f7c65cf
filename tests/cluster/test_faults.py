"""The fault campaign: brokers, the tailer and the shipper killed while records flow through a 3-broker cluster.

Every test ends with the same check: every record that logpipe accepted is on the topic (and, where
the shipper is involved, in Elasticsearch exactly once). Duplicates in Kafka are allowed and counted;
duplicate documents in Elasticsearch are not. Each test adds its figures to the fault matrix
(docs/reliability.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import logpipe
from conftest import KAFKA_CLIENTS, Service, consume_all, wait_until

from .conftest import NODES, Cluster, FaultMatrix

LOGPIPE = Path(sys.executable).with_name("logpipe")
if not LOGPIPE.exists():
    LOGPIPE = Path(shutil.which("logpipe") or "logpipe")


def unique(name: str) -> str:
    return f"lpcluster-{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic(healthy_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh topic name (created by the test); deleted afterwards with any topic it prefixes (.dlq)."""
    name = unique(request.node.name.split("[")[0].removeprefix("test_")[:30].replace("_", "-"))
    yield name
    healthy_cluster.delete_topics(name)


class Chaos:
    """Runs a fault on its own thread once `trigger` is called; `join` re-raises what it raised."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._action = action
        self._go = threading.Event()
        self.error: BaseException | None = None
        self.at: float | None = None
        self.done_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._go.wait()
        self.at = time.monotonic()
        try:
            self._action()
        except BaseException as exc:  # surfaced by join()
            self.error = exc
        self.done_at = time.monotonic()

    def trigger(self) -> None:
        self._go.set()

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = 300) -> None:
        self._go.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the fault action did not finish"
        if self.error is not None:
            raise self.error


def log_to(cluster: Cluster, topic: str, tmp_path: Path, client: str = "auto") -> Any:
    """structlog logging through logpipe's Kafka exporter (acks=all, on *client*) into *topic*; spool under tmp_path."""
    pipeline = logpipe.configure(
        exporter="kafka",
        exporter_options={
            "kafka": {"bootstrap_servers": cluster.address, "topic": topic, "acks": "all", "client": client},
            "spool": {"dir": tmp_path / "spool", "replay_interval": 0.2},
        },
        local_render="none",
    )
    structlog.configure(processors=pipeline.processors())
    return structlog.get_logger()


def log_paced(
    log: Any, rate: float, *, n: int | None = None, until: Callable[[], bool] | None = None, at: dict[int, Any]
) -> tuple[int, float]:
    """Log records seq=0, 1, ... at *rate*/s: *n* of them, or until *until()* (checked every 100).

    *at* maps a sequence number to a callable run just before that record. Returns how many were
    logged and the slowest log call in seconds.
    """
    slowest = 0.0
    t0 = time.perf_counter()
    i = 0
    while (n is None or i < n) and not (until is not None and i % 100 == 0 and until()):
        ahead = t0 + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)  # pacing, not synchronisation
        if i in at:
            at[i]()
        begin = time.perf_counter()
        log.info("fault campaign", seq=i)
        slowest = max(slowest, time.perf_counter() - begin)
        i += 1
    return i, slowest


def seqs_on(messages: list[Any]) -> tuple[dict[int, set[str]], Counter[str]]:
    """seq -> the Ids it arrived with, and how often each Id arrived."""
    by_seq: dict[int, set[str]] = {}
    ids: Counter[str] = Counter()
    for message in messages:
        doc = orjson.loads(message.value)
        by_seq.setdefault(doc["Field"]["seq"], set()).add(doc["Id"])
        ids[doc["Id"]] += 1
    return by_seq, ids


def wait_for_all(address: str, topic: str, expected: int, key: Callable[[list[Any]], int], timeout: float) -> list[Any]:
    """Reads *topic* until key(messages) == expected (what the spool replays may come later); returns them."""
    seen: dict[str, Any] = {}

    def complete() -> bool:
        seen["messages"] = consume_all(address, topic)
        seen["count"] = key(seen["messages"])
        return bool(seen["count"] >= expected)

    try:
        wait_until(complete, timeout=timeout, interval=1.0)
    except AssertionError:
        raise AssertionError(f"{seen.get('count')} of {expected} records on {topic} after {timeout}s") from None
    return list(seen["messages"])


def assert_accepted_all(stats: Any, n: int) -> None:
    """logpipe.stats() adds up: every record accepted, each sent or spooled, none dropped or failed."""
    assert stats.submitted == n
    assert (stats.dropped, stats.failed, stats.queued, stats.in_flight) == (0, 0, 0, 0), stats
    assert stats.sent + stats.spilled == n, stats


# -- the application's Kafka exporter ---------------------------------------------------------


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_kill_9_of_a_broker_while_logging(
    healthy_cluster: Cluster, topic: str, matrix: FaultMatrix, tmp_path: Path, victim: str, client: str
) -> None:
    """kill -9 of the partition's leader (or a follower) mid-stream: every logged record reaches the topic."""
    cluster = healthy_cluster
    cluster.create_topic(topic, 1)
    leader = cluster.leader(topic)
    node = leader if victim == "leader" else next(n for n in NODES if n != leader)
    log = log_to(cluster, topic, tmp_path, client)
    chaos = Chaos(lambda: cluster.kill(node))
    n, rate = 20_000, 2_000.0
    started = time.monotonic()
    logged, slowest = log_paced(log, rate, n=n, at={n // 4: chaos.trigger})
    chaos.join()
    assert logpipe.flush(60)
    flushed = time.monotonic()
    stats = logpipe.stats()["kafka"]
    assert_accepted_all(stats, n)

    messages = wait_for_all(cluster.address, topic, n, lambda m: len(seqs_on(m)[0]), timeout=120)
    by_seq, ids = seqs_on(messages)
    assert set(by_seq) == set(range(n))  # none lost
    assert all(len(v) == 1 for v in by_seq.values())  # a redelivered record keeps its Id
    after = cluster.leader(topic)
    if victim == "leader":
        assert after != node
    assert chaos.at is not None
    matrix.add(
        f"kill -9 of the partition {victim} (exporter on {client}, acks=all)",
        test=f"test_kill_9_of_a_broker_while_logging[{victim}-{client}]",
        logged=n,
        rate=rate,
        lost=n - len(by_seq),
        kafka_messages=len(messages),
        kafka_duplicates=len(messages) - len(ids),
        spooled=stats.spilled,
        slowest_log_call_ms=round(slowest * 1000, 1),
        flush_after_kill_s=round(flushed - chaos.at, 1),
        leader_before=leader,
        leader_after=after,
        seconds=round(time.monotonic() - started, 1),
    )


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_rolling_restart_while_logging_1000_per_second(
    healthy_cluster: Cluster, topic: str, matrix: FaultMatrix, tmp_path: Path, client: str
) -> None:
    """Each broker restarted in turn while the application logs 1,000 ev/s: every record reaches the topic."""
    cluster = healthy_cluster
    cluster.create_topic(topic, 3)
    log = log_to(cluster, topic, tmp_path, client)
    chaos = Chaos(lambda: cluster.run("restart", timeout=600))
    rate = 1_000.0
    started = time.monotonic()
    # Logs until the restart is over, plus 2 s; at most 4 minutes' worth.
    restart_over: dict[str, float] = {}

    def until() -> bool:
        if chaos.finished and "at" not in restart_over:
            restart_over["at"] = time.monotonic()
        return "at" in restart_over and time.monotonic() - restart_over["at"] > 2.0

    n, slowest = log_paced(log, rate, n=240_000, until=until, at={1_000: chaos.trigger})
    chaos.join()
    assert logpipe.flush(60)
    stats = logpipe.stats()["kafka"]
    assert_accepted_all(stats, n)
    messages = wait_for_all(cluster.address, topic, n, lambda m: len(seqs_on(m)[0]), timeout=120)
    by_seq, ids = seqs_on(messages)
    assert set(by_seq) == set(range(n))
    assert all(len(v) == 1 for v in by_seq.values())
    assert chaos.at is not None and chaos.done_at is not None
    matrix.add(
        f"rolling restart of the 3 brokers at 1,000 ev/s (exporter on {client}, acks=all)",
        test=f"test_rolling_restart_while_logging_1000_per_second[{client}]",
        logged=n,
        rate=rate,
        lost=n - len(by_seq),
        kafka_messages=len(messages),
        kafka_duplicates=len(messages) - len(ids),
        spooled=stats.spilled,
        slowest_log_call_ms=round(slowest * 1000, 1),
        restart_s=round(chaos.done_at - chaos.at, 1),
        seconds=round(time.monotonic() - started, 1),
    )


# -- logpipe tail ------------------------------------------------------------------------------


def kafkalog_line(seq: int) -> bytes:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    record = {
        "Type": "info",
        "Action": "test",
        "Time": now,
        "Msg": "tailed",
        "Field": {"seq": seq},
        "FuncName": "",
        "TraceId": "",
        "SpanId": "",
        "Service": "cluster-test",
        "Host": "localhost",
        "Id": str(uuid.uuid4()),
    }
    return orjson.dumps(record) + b"\n"


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_tail_while_the_leader_is_killed(
    healthy_cluster: Cluster, topic: str, matrix: FaultMatrix, tmp_path: Path, client: str
) -> None:
    """`logpipe tail` follows a growing file while its partition's leader is killed: every line reaches the topic."""
    cluster = healthy_cluster
    cluster.create_topic(topic, 1)
    node = cluster.leader(topic)
    path = tmp_path / "app.jsonl"
    path.touch()
    out = tmp_path / "tail.log"
    command = [str(LOGPIPE), "tail", "--quiet", "-b", cluster.address, "-t", topic]
    command += ["--registry", str(tmp_path / "registry.json"), "--dead-letter", str(tmp_path / "dead.jsonl")]
    with open(out, "wb") as sink:
        env = {**os.environ, "LOGPIPE_KAFKA_CLIENT": client}
        tailer = subprocess.Popen([*command, str(path)], stdout=sink, stderr=subprocess.STDOUT, env=env)
    chaos = Chaos(lambda: cluster.kill(node))
    n, rate = 20_000, 2_000.0
    started = time.monotonic()
    try:
        with open(path, "ab", buffering=0) as file:
            t0 = time.perf_counter()
            for i in range(n):
                ahead = t0 + i / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)  # pacing, not synchronisation
                if i == n // 4:
                    chaos.trigger()
                file.write(kafkalog_line(i))
        chaos.join()
        messages = wait_for_all(cluster.address, topic, n, lambda m: len(seqs_on(m)[0]), timeout=120)
    finally:
        tailer.send_signal(signal.SIGTERM)
        try:
            code = tailer.wait(60)
        except subprocess.TimeoutExpired:
            tailer.kill()
            raise
    summary = out.read_text()
    assert code == 0, summary
    by_seq, ids = seqs_on(messages)
    written = [orjson.loads(line)["Id"] for line in path.read_bytes().splitlines()]
    assert set(ids) == set(written)  # none lost, each line byte for byte with its Id
    assert set(by_seq) == set(range(n))
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_bytes()
    retries = re.search(r"retries=(\d+)", summary)
    assert chaos.at is not None
    matrix.add(
        f"kill -9 of the partition leader under logpipe tail (on {client})",
        test=f"test_tail_while_the_leader_is_killed[{client}]",
        logged=n,
        rate=rate,
        lost=n - len(by_seq),
        kafka_messages=len(messages),
        kafka_duplicates=len(messages) - len(ids),
        tail_retries=int(retries.group(1)) if retries else None,
        leader_before=node,
        leader_after=cluster.leader(topic),
        seconds=round(time.monotonic() - started, 1),
    )


# -- logpipe ship into Elasticsearch ---------------------------------------------------------------


@pytest.fixture
def es(es_service: Service) -> Iterator[Any]:
    from elasticsearch import Elasticsearch

    with Elasticsearch(es_service.address, request_timeout=30, max_retries=0) as client:
        yield client


@pytest.fixture
def prefix(es: Any) -> Iterator[str]:
    """A fresh index prefix; its indices and template are deleted afterwards."""
    name = unique("ship")
    yield name
    es.options(ignore_status=404).indices.delete(index=f"{name}-*")
    es.options(ignore_status=404).indices.delete_index_template(name=f"logpipe-{name}")


def es_count(es: Any, prefix: str) -> int:
    try:
        es.indices.refresh(index=f"{prefix}-*")
        return int(es.count(index=f"{prefix}-*")["count"])
    except Exception:  # no index yet
        return 0


def es_ids(es: Any, prefix: str) -> list[tuple[str, str]]:
    """(_id, Id) of every document under *prefix*."""
    from elasticsearch.helpers import scan

    es.indices.refresh(index=f"{prefix}-*")
    return [(d["_id"], d["_source"]["Id"]) for d in scan(es, index=f"{prefix}-*", query={"_source": ["Id"]})]


@pytest.mark.parametrize("broker_fault", ["none", "leader"])
def test_ship_killed_and_restarted_end_to_end(
    broker_fault: str,
    healthy_cluster: Cluster,
    topic: str,
    prefix: str,
    es: Any,
    es_service: Service,
    matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    """`logpipe ship` kill -9'd mid-stream and restarted while the application logs: each record is one document.

    With broker_fault=leader, the leader of partition 0 is also kill -9'd while the application logs.
    """
    cluster = healthy_cluster
    cluster.create_topic(topic, 3)
    out = tmp_path / "ship.log"
    command = [str(LOGPIPE), "ship", "--quiet", "-b", cluster.address, "-t", topic, "--group", topic]
    command += ["--es-hosts", es_service.address, "--index-prefix", prefix, "--batch-size", "1000"]
    # The killed member holds its partitions until its session times out (broker minimum: 6 s).
    command += ["--session-timeout", "6", "--dead-letter", f"file:{tmp_path / 'dead.jsonl'}"]
    # Small bulk requests: a batch stays half indexed (not yet committed) long enough to be killed in.
    env = {**os.environ, "LOGPIPE_ELASTICSEARCH_REPLICAS": "0", "LOGPIPE_ELASTICSEARCH_CHUNK_SIZE": "50"}

    def spawn() -> subprocess.Popen[bytes]:
        with open(out, "ab") as sink:
            return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)

    shipper = spawn()
    log = log_to(cluster, topic, tmp_path)
    n, rate = 30_000, 3_000.0
    started = time.monotonic()
    killed: dict[str, int] = {}

    def kill_and_restart() -> None:
        wait_until(lambda: es_count(es, prefix) >= n // 3, timeout=120, interval=0.05)
        killed["indexed"] = es_count(es, prefix)
        shipper.send_signal(signal.SIGKILL)
        assert shipper.wait(30) == -signal.SIGKILL

    chaos = Chaos(kill_and_restart)
    chaos.trigger()
    broker = Chaos(lambda: cluster.kill(cluster.leader(topic, 0)))
    try:
        log_paced(log, rate, n=n, at={n // 4: broker.trigger} if broker_fault == "leader" else {})
        assert logpipe.flush(60)
        stats = logpipe.stats()["kafka"]
        assert_accepted_all(stats, n)
        chaos.join()
        if broker_fault == "leader":
            broker.join()
        shipper = spawn()
        wait_until(lambda: es_count(es, prefix) >= n, timeout=180, interval=0.5)
    finally:
        shipper.send_signal(signal.SIGTERM)
        try:
            code = shipper.wait(60)
        except subprocess.TimeoutExpired:
            shipper.kill()
            raise
    summary = out.read_text()
    assert code == 0, summary
    docs = es_ids(es, prefix)
    messages = consume_all(cluster.address, topic)
    by_seq, ids = seqs_on(messages)
    assert set(by_seq) == set(range(n))  # every logged record is on the topic
    assert len(docs) == len({record_id for _, record_id in docs}) == len(ids) == n  # and one document each
    assert all(doc_id == record_id for doc_id, record_id in docs)
    assert {record_id for _, record_id in docs} == set(ids)
    absorbed = [int(m) for m in re.findall(r"duplicates=(\d+)", summary)]
    fault = "kill -9 of logpipe ship mid-stream, then a restart (into Elasticsearch)"
    if broker_fault == "leader":
        fault = "kill -9 of a partition leader and of logpipe ship, then a restart (into Elasticsearch)"
    matrix.add(
        fault,
        test=f"test_ship_killed_and_restarted_end_to_end[{broker_fault}]",
        logged=n,
        rate=rate,
        lost=n - len(by_seq),
        kafka_messages=len(messages),
        kafka_duplicates=len(messages) - len(ids),
        es_documents=len(docs),
        es_distinct_ids=len({record_id for _, record_id in docs}),
        es_duplicates=len(docs) - len({record_id for _, record_id in docs}),
        killed_at_indexed=killed.get("indexed"),
        redelivered_absorbed_by_id=sum(absorbed),
        spooled=stats.spilled,
        seconds=round(time.monotonic() - started, 1),
    )
