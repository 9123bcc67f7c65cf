"""SIGKILL of `logpipe tail` and of `logpipe ship` at random moments, five times in one test, then a final run.

The kill delays are random (bounded; the seed is in the matrix row, and ``LOGPIPE_FAULT_SEED``
replays a run); every wait for a result is a poll with a deadline. Each test ends in
Elasticsearch: document count == distinct Ids == records (lines) written, whatever the kills left
twice in Kafka, which is counted and reported.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import logpipe
from cluster.conftest import FaultMatrix
from cluster.test_faults import LOGPIPE, assert_accepted_all, es_count, es_ids, kafkalog_line, log_paced, seqs_on
from conftest import KAFKA_CLIENTS, Service, consume_all, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.elasticsearch]

KILLS = 5


@pytest.fixture
def seed() -> int:
    """The seed of the kill delays: ``LOGPIPE_FAULT_SEED``, or a new one (printed, and in the matrix row)."""
    value = int(os.environ.get("LOGPIPE_FAULT_SEED") or time.time_ns() % 1_000_000)
    print(f"\n[random kills] LOGPIPE_FAULT_SEED={value}")
    return value


class Shipper:
    """`logpipe ship` runs from *topic* into *prefix*: spawned, killed, stopped; the summaries in one file."""

    def __init__(self, kafka: str, es_url: str, topic: str, prefix: str, tmp_path: Path) -> None:
        self.out = tmp_path / "ship.log"
        self.dead = tmp_path / "ship-dead.jsonl"
        self.command = [str(LOGPIPE), "ship", "--quiet", "-b", kafka, "-t", topic, "--group", topic]
        self.command += ["--es-hosts", es_url, "--index-prefix", prefix, "--batch-size", "1000"]
        # Static membership: a restarted shipper takes its partitions back at once, instead of
        # waiting for the killed member's session to time out (then, 6 s).
        self.command += ["--instance-id", f"{topic}-1", "--session-timeout", "6", "--dead-letter", f"file:{self.dead}"]
        # Small bulk requests: a batch stays half indexed, not yet committed, long enough to be killed in.
        self.env = {**os.environ, "LOGPIPE_ELASTICSEARCH_REPLICAS": "0", "LOGPIPE_ELASTICSEARCH_CHUNK_SIZE": "100"}
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with open(self.out, "ab") as sink:
            self.process = subprocess.Popen(self.command, stdout=sink, stderr=subprocess.STDOUT, env=self.env)

    def kill(self) -> bool:
        """SIGKILL; True when it was still running (the kill hit a live shipper)."""
        assert self.process is not None
        alive = self.process.poll() is None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        return alive

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def summary(self) -> str:
        return self.out.read_text()


@pytest.fixture
def shipper(kafka_service: Service, es_service: Service, topic: str, prefix: str, tmp_path: Path) -> Iterator[Shipper]:
    ship = Shipper(kafka_service.address, es_service.address, topic, prefix, tmp_path)
    try:
        yield ship
    finally:
        if ship.process is not None and ship.process.poll() is None:
            ship.process.kill()
            ship.process.wait(30)


def end_offsets(address: str, topic: str) -> int:
    """Messages on *topic* so far (the sum of its partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=address, enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return int(sum(consumer.end_offsets([TopicPartition(topic, p) for p in partitions]).values()))
    finally:
        consumer.close()


def ship_all_and_check(shipper: Shipper, es: Any, prefix: str, expected: set[str]) -> tuple[list[Any], int]:
    """A last shipper, stopped once every record is a document: one document per Id of *expected*."""
    shipper.spawn()
    try:
        wait_until(lambda: es_count(es, prefix) >= len(expected), timeout=120, interval=0.5)
    finally:
        code = shipper.stop()
    summary = shipper.summary()
    assert code == 0, summary
    assert "Traceback" not in summary, summary
    docs = es_ids(es, prefix)
    distinct = {record_id for _, record_id in docs}
    assert len(docs) == len(distinct) == len(expected), (len(docs), len(distinct), len(expected))
    assert distinct == expected
    assert all(doc_id == record_id for doc_id, record_id in docs)
    assert not shipper.dead.exists() or not shipper.dead.read_bytes()
    last = re.findall(r"duplicates=(\d+)", summary)
    return docs, int(last[-1]) if last else 0


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_tail_killed_at_random_five_times(
    client: str,
    monkeypatch: pytest.MonkeyPatch,
    kafka_service: Service,
    es: Any,
    topic: str,
    prefix: str,
    shipper: Shipper,
    seed: int,
    matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    """`logpipe tail` SIGKILLed 5 times while the file grows, then `--once`: every line in Kafka, once in ES."""
    monkeypatch.setenv("LOGPIPE_KAFKA_CLIENT", client)  # the tail's producer (its processes inherit it)
    shipper.env["LOGPIPE_SHIP_KAFKA_CLIENT"] = client
    rng = random.Random(seed)
    path = tmp_path / "app.jsonl"
    path.touch()
    out = tmp_path / "tail.log"
    command = [str(LOGPIPE), "tail", "--quiet", "-b", kafka_service.address, "-t", topic]
    command += ["--registry", str(tmp_path / "registry.json"), "--dead-letter", str(tmp_path / "dead.jsonl")]
    n, rate = 24_000, 3_000.0
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with open(path, "ab", buffering=0) as file:
                t0 = time.perf_counter()
                for i in range(n):
                    ahead = t0 + i / rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)  # pacing, not synchronisation
                    file.write(kafkalog_line(i))
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    writer = threading.Thread(target=write, name="app-writer")
    started = time.monotonic()
    writer.start()
    kills: list[dict[str, Any]] = []
    for _ in range(KILLS):
        with open(out, "ab") as sink:
            tailer = subprocess.Popen([*command, str(path)], stdout=sink, stderr=subprocess.STDOUT)
        delay = rng.uniform(0.3, 2.0)
        time.sleep(delay)  # the random moment of the kill, not a synchronisation
        alive = tailer.poll() is None
        tailer.send_signal(signal.SIGKILL)
        tailer.wait(30)
        kills.append(
            {"after_s": round(delay, 2), "alive": alive, "on_topic": end_offsets(kafka_service.address, topic)}
        )
    writer.join(120)
    assert not writer.is_alive() and not errors, errors
    with open(out, "ab") as sink:
        final = subprocess.run([*command, "--once", str(path)], stdout=sink, stderr=subprocess.STDOUT, timeout=120)
    assert final.returncode == 0, out.read_text()
    assert "Traceback" not in out.read_text(), out.read_text()  # nor from the exporter's orphaned child
    assert all(kill["alive"] for kill in kills), kills

    messages = consume_all(kafka_service.address, topic)
    by_seq, ids = seqs_on(messages)
    written = {orjson.loads(line)["Id"] for line in path.read_bytes().splitlines()}
    assert len(written) == n
    assert set(ids) == written  # nothing lost; a line sent twice keeps its Id
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_bytes()
    docs, absorbed = ship_all_and_check(shipper, es, prefix, written)
    matrix.add(
        f"SIGKILL of logpipe tail {KILLS} times at random moments while the file grows, then tail --once, then ship "
        f"({client})",
        test=f"test_tail_killed_at_random_five_times[{client}]",
        client=client,
        seed=seed,
        lines=n,
        rate=rate,
        kills=kills,
        lost=n - len(set(ids) & written),
        kafka_messages=len(messages),
        kafka_duplicates=len(messages) - len(ids),
        es_documents=len(docs),
        es_duplicates=len(docs) - len({record_id for _, record_id in docs}),
        redelivered_absorbed_by_id=absorbed,
        seconds=round(time.monotonic() - started, 1),
    )


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_ship_killed_at_random_five_times(
    client: str,
    kafka_service: Service,
    es: Any,
    topic: str,
    prefix: str,
    shipper: Shipper,
    seed: int,
    matrix: FaultMatrix,
    tmp_path: Path,
) -> None:
    """`logpipe ship` SIGKILLed 5 times while the application logs, then a last run: each record one document."""
    shipper.env["LOGPIPE_SHIP_KAFKA_CLIENT"] = client  # the consumer's commits are what a kill tests
    rng = random.Random(seed)
    pipeline = logpipe.configure(
        exporter="kafka",
        exporter_options={
            "kafka": {"bootstrap_servers": kafka_service.address, "topic": topic, "acks": "all", "client": client},
            "spool": {"dir": tmp_path / "spool", "replay_interval": 0.2},
        },
        local_render="none",
    )
    structlog.configure(processors=pipeline.processors())
    log = structlog.get_logger()
    n, rate = 30_000, 2_000.0
    kills: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def kill_at_random() -> None:
        try:
            for _ in range(KILLS):
                before = es_count(es, prefix)
                shipper.spawn()
                # Killed while it ships: once it has indexed something (a rebalance may come first), at random.
                wait_until(lambda b=before: es_count(es, prefix) > b or b >= n, timeout=60, interval=0.05)
                delay = rng.uniform(0.0, 1.5)
                time.sleep(delay)  # the random moment of the kill, not a synchronisation
                alive = shipper.kill()
                kills.append({"after_progress_s": round(delay, 2), "alive": alive, "indexed": es_count(es, prefix)})
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    killer = threading.Thread(target=kill_at_random, name="ship-killer")
    started = time.monotonic()
    killer.start()
    log_paced(log, rate, n=n, at={})
    assert logpipe.flush(60)
    assert_accepted_all(logpipe.stats()["kafka"], n)
    killer.join(180)
    assert not killer.is_alive() and not errors, errors
    assert all(kill["alive"] for kill in kills), kills

    messages = consume_all(kafka_service.address, topic)
    by_seq, ids = seqs_on(messages)
    assert set(by_seq) == set(range(n))
    docs, absorbed = ship_all_and_check(shipper, es, prefix, set(ids))
    matrix.add(
        f"SIGKILL of logpipe ship {KILLS} times at random moments while the application logs, then a last run "
        f"({client})",
        test=f"test_ship_killed_at_random_five_times[{client}]",
        client=client,
        seed=seed,
        logged=n,
        rate=rate,
        kills=kills,
        lost=n - len(by_seq),
        kafka_messages=len(messages),
        kafka_duplicates=len(messages) - len(ids),
        es_documents=len(docs),
        es_duplicates=len(docs) - len({record_id for _, record_id in docs}),
        redelivered_absorbed_by_id=absorbed,
        seconds=round(time.monotonic() - started, 1),
    )
