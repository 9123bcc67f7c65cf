"""Records logged in worker processes arrive when the worker ends normally.

multiprocessing workers (Process, ProcessPoolExecutor, Celery prefork) end
with ``os._exit`` after multiprocessing's own finalizers, so ``atexit``
never runs in them: logpipe flushes from one of those finalizers. Each test
runs a small application in a subprocess and counts every record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import orjson
import pytest

from conftest import KAFKA_CLIENTS, Service, consume_all

APP = """
import multiprocessing as mp, os, sys, structlog, logpipe
from concurrent.futures import ProcessPoolExecutor

def configure():
    structlog.configure(processors=logpipe.processors(local_render="none", batch_delay=3600))  # exporter: LOGPIPE_*

def work(n):
    if mp.get_start_method() != "fork":
        configure()  # a spawned or forkserver child starts from nothing: it configures itself
    log = structlog.get_logger()
    for i in range(1000):
        log.info("work", n=n, i=i)
    return n

if __name__ == "__main__":
    mode, method = sys.argv[1], sys.argv[2]
    mp.set_start_method(method)
    configure()
    if mode == "process":
        workers = [mp.Process(target=work, args=(k,)) for k in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
            assert w.exitcode == 0, w.exitcode
    elif mode == "pool":
        with ProcessPoolExecutor(3) as pool:
            assert sorted(pool.map(work, range(3))) == [0, 1, 2]
    elif mode == "prefork":  # a gunicorn-like master: os.fork, the worker exits through sys.exit
        children = []
        for k in range(3):
            pid = os.fork()
            if pid == 0:
                work(k)
                sys.exit(0)
            children.append(pid)
        for pid in children:
            assert os.waitpid(pid, 0)[1] == 0
    structlog.get_logger().info("master done")
"""


def run_app(tmp_path: Path, mode: str, method: str, **env: str) -> tuple[list[dict], str]:  # type: ignore[type-arg]
    """Run the application; its records, read back from the file exporter's file (or *env*'s Kafka topic)."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP))
    done = subprocess.run(
        [sys.executable, str(script), mode, method],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "LOGPIPE_EXPORTER": "file", **env},
    )
    assert done.returncode == 0, done.stderr
    if env.get("LOGPIPE_EXPORTER") == "kafka":
        payloads = [m.value for m in consume_all(env["LOGPIPE_KAFKA_BOOTSTRAP_SERVERS"], env["LOGPIPE_KAFKA_TOPIC"])]
    else:
        payloads = (tmp_path / "logs" / "logpipe.jsonl").read_bytes().splitlines()
    return [orjson.loads(p) for p in payloads], done.stderr


@pytest.mark.parametrize(
    ("mode", "method"),
    [
        ("process", "fork"),
        ("process", "spawn"),
        ("process", "forkserver"),
        ("pool", "fork"),
        ("pool", "spawn"),
        ("prefork", "fork"),
    ],
)
def test_every_record_of_every_worker_arrives(tmp_path: Path, mode: str, method: str) -> None:
    records, stderr = run_app(tmp_path, mode, method)
    work = {(r["Field"]["n"], r["Field"]["i"]) for r in records if r["Msg"] == "work"}
    assert len(work) == 3000, f"{3000 - len(work)} of 3,000 records lost"
    assert [r["Msg"] for r in records].count("master done") == 1
    assert "Traceback" not in stderr


@pytest.mark.kafka
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
@pytest.mark.parametrize(("mode", "method"), [("process", "fork"), ("pool", "fork"), ("process", "spawn")])
def test_with_the_kafka_exporter(tmp_path: Path, kafka_service: Service, mode: str, method: str, client: str) -> None:
    """Workers log to Kafka: on kafka-python through an exporter child process of each worker, on confluent-kafka
    (librdkafka is not fork-safe) through a producer each worker makes after the fork; every record arrives."""
    topic = f"workers-{uuid.uuid4().hex[:8]}"
    kafka = {"LOGPIPE_EXPORTER": "kafka", "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_service.address,
             "LOGPIPE_KAFKA_TOPIC": topic, "LOGPIPE_KAFKA_CLIENT": client}  # fmt: skip
    records, stderr = run_app(tmp_path, mode, method, **kafka)
    work = {(r["Field"]["n"], r["Field"]["i"]) for r in records if r["Msg"] == "work"}
    assert len(work) == 3000, f"{3000 - len(work)} of 3,000 records lost"
    assert "Traceback" not in stderr
