"""Elasticsearch behind TLS and authentication (nginx in front of the node, scripts/es-front.sh) for the
exporter, ``logpipe ship`` and ``logpipe search``: the right credentials deliver; wrong ones say which
setting to fix, keep the records (spool or uncommitted), never dead-letter them, never print a secret."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import structlog

import logpipe
from conftest import EsFront, Service, wait_until

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]

LOGPIPE = Path(sys.executable).parent / "logpipe"


def front_env(front: EsFront, *, password: str | None = None, api_key: str | None = None) -> dict[str, str]:
    """``LOGPIPE_ELASTICSEARCH_*`` for the front: basic auth by default, or an API key."""
    env = {"LOGPIPE_ELASTICSEARCH_HOSTS": front.url, "LOGPIPE_ELASTICSEARCH_CA_CERTS": str(front.ca),
           "LOGPIPE_ELASTICSEARCH_REPLICAS": "0"}  # fmt: skip
    if api_key is not None:
        env["LOGPIPE_ELASTICSEARCH_API_KEY"] = api_key
    else:
        env["LOGPIPE_ELASTICSEARCH_USERNAME"] = front.user
        env["LOGPIPE_ELASTICSEARCH_PASSWORD"] = front.password if password is None else password
    return env


def count(es_service: Service, prefix: str) -> int:
    from elasticsearch import Elasticsearch

    with Elasticsearch(es_service.address) as client:
        client.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True)
        return int(client.count(index=f"{prefix}-*", ignore_unavailable=True)["count"])


@pytest.mark.parametrize("auth", ["basic", "api_key"])
def test_the_exporter_delivers_through_tls_and_auth(
    es_front: EsFront, es_service: Service, auth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"secf-{uuid.uuid4().hex[:8]}"
    for name, value in front_env(es_front, api_key=es_front.api_key if auth == "api_key" else None).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOGPIPE_ELASTICSEARCH_INDEX_PREFIX", prefix)
    structlog.configure(processors=logpipe.processors(exporter="elasticsearch", local_render="none"))
    for i in range(15):
        structlog.get_logger().info("through the front", i=i)
    assert logpipe.flush(60)
    assert logpipe.stats()["elasticsearch"].sent == 15
    wait_until(lambda: count(es_service, prefix) == 15, 30)


def test_wrong_credentials_keep_the_records_in_the_spool(es_front: EsFront, tmp_path: Path) -> None:
    """401 -> the exporter's records go to the spool with a message naming the settings; no dead letter."""
    wrong = "wrong-" + uuid.uuid4().hex
    app = (
        "import structlog, logpipe\n"
        "structlog.configure(processors=logpipe.processors(exporter='elasticsearch', local_render='none'))\n"
        "for i in range(10):\n"
        "    structlog.get_logger().info('kept', i=i)\n"
        "assert logpipe.flush(60)\n"
        "print(logpipe.stats()['elasticsearch'].spilled)\n"
    )
    env = {**os.environ, **front_env(es_front, password=wrong), "LOGPIPE_ELASTICSEARCH_MAX_RETRIES": "1"}
    done = subprocess.run([sys.executable, "-c", app], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 10
    assert "LOGPIPE_ELASTICSEARCH_PASSWORD" in done.stderr and "401" in done.stderr
    assert wrong not in done.stderr + done.stdout and es_front.password not in done.stderr
    assert not (tmp_path / "logs" / "dead-letter.jsonl").exists()
    assert "10 record(s) wait in" in done.stderr


def test_search_through_the_front(es_front: EsFront, es_service: Service, tmp_path: Path) -> None:
    """`logpipe search` with a CA file and an API key; a wrong key is an error naming the setting."""
    prefix = f"secs-{uuid.uuid4().hex[:8]}"
    record = logpipe.info("found through TLS", "test")
    from elasticsearch import Elasticsearch
    from logpipe import elasticsearch as es

    with Elasticsearch(es_service.address) as client:
        es.install_template(client, es.ElasticsearchOptions(index_prefix=prefix, replicas=0))
        index = es.index_name(prefix, record.ts)
        client.index(index=index, id=record.id, document=record.decoded(), refresh=True)
    args = [str(LOGPIPE), "search", "--json", "--index-prefix", prefix, "--since", "1d"]
    ok = subprocess.run(args, env={**os.environ, **front_env(es_front, api_key=es_front.api_key)},
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "found through TLS" in ok.stdout
    wrong = "d3Jvbmc6d3Jvbmc="
    bad = subprocess.run(args, env={**os.environ, **front_env(es_front, api_key=wrong)},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0
    assert "LOGPIPE_ELASTICSEARCH_API_KEY" in bad.stderr and wrong not in bad.stderr + bad.stdout


@pytest.mark.kafka
def test_ship_through_the_front_and_wrong_credentials_commit_nothing(
    es_front: EsFront, es_service: Service, kafka_service: Service, tmp_path: Path
) -> None:
    from kafka import KafkaAdminClient, KafkaProducer

    topic = f"secship-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_service.address)
    for i in range(12):
        producer.send(topic, logpipe.info(f"ship {i}", "test").payload)
    producer.flush(30)
    producer.close()

    def ship(prefix: str, group: str, **auth: Any) -> subprocess.Popen[str]:
        args = [str(LOGPIPE), "ship", "--quiet", "-b", kafka_service.address, "-t", topic, "--group", group,
                "--index-prefix", prefix, "--dead-letter", f"file:{tmp_path / group}.jsonl"]  # fmt: skip
        return subprocess.Popen(args, env={**os.environ, **front_env(es_front, **auth)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    def committed(group: str) -> int:
        admin = KafkaAdminClient(bootstrap_servers=kafka_service.address)
        try:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            return sum(max(meta.offset, 0) for meta in offsets.values())
        finally:
            admin.close()

    wrong = "wrong-" + uuid.uuid4().hex
    bad_prefix = f"secb-{uuid.uuid4().hex[:8]}"
    bad = ship(bad_prefix, f"{topic}-bad", password=wrong)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            bad.wait(15)  # it keeps retrying: nothing lost, nothing dead-lettered
    finally:
        bad.terminate()
        out, err = bad.communicate(timeout=60)
    assert committed(f"{topic}-bad") == 0 and count(es_service, bad_prefix) == 0
    assert not (tmp_path / f"{topic}-bad.jsonl").exists()
    assert wrong not in out + err

    prefix = f"secg-{uuid.uuid4().hex[:8]}"
    good = ship(prefix, f"{topic}-good")
    try:
        wait_until(lambda: count(es_service, prefix) == 12, 90, interval=0.5)
        wait_until(lambda: committed(f"{topic}-good") == 12, 30, interval=0.5)
    finally:
        good.terminate()
        out, err = good.communicate(timeout=60)
    assert es_front.password not in out + err
