"""Every path that talks to Kafka does so over SASL_SSL: the exporter (in process and in its child),
spool replay, ``logpipe tail``, ``logpipe ship`` with both consumer libraries and its dead-letter
producer. A wrong password keeps the records (spool, or uncommitted) and says which setting to fix;
no secret shows anywhere. Against the real secured broker of ``secure_kafka``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

import logpipe
from conftest import KAFKA_CLIENTS, SecureKafka, Service, wait_until
from logpipe.config import Secret
from logpipe.kafkaclient import Connection, KafkaSecurity, kafka_python
from logpipe.spool.backlog import SpoolCounter

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
LOGPIPE = Path(sys.executable).parent / "logpipe"


def settings(broker: SecureKafka, password: str | None = None) -> dict[str, Any]:
    """The Kafka exporter's security settings for the broker's SASL_SSL listener (SCRAM-SHA-512)."""
    return {
        "bootstrap_servers": broker.sasl_ssl,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": broker.username,
        "sasl_password": broker.password if password is None else password,
        "ssl_cafile": str(broker.ca),
    }


def env(broker: SecureKafka, prefix: str, password: str | None = None) -> dict[str, str]:
    """The same settings as environment variables under *prefix*."""
    return {f"{prefix}{k.upper()}": str(v) for k, v in settings(broker, password).items()}


def messages(broker: SecureKafka, topic: str, expect: int, timeout: float = 60) -> list[Any]:
    """What *topic* holds, read back over SASL_SSL, once it holds *expect* messages."""
    from kafka import KafkaConsumer

    security = KafkaSecurity(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username=broker.username,
        sasl_password=Secret(broker.password), ssl_cafile=broker.ca,
    )  # fmt: skip
    connection = Connection((broker.sasl_ssl,), "logpipe-test", "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS", security)
    consumer = KafkaConsumer(
        topic, **kafka_python(connection, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=2000)
    )
    found: list[Any] = []
    try:
        wait_until(lambda: found.extend(consumer) or len(found) >= expect, timeout, interval=0.1)
    finally:
        consumer.close()
    return found


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_exporter_delivers_masked_records_over_sasl_ssl(
    secure_kafka: SecureKafka, isolation: str, client: str
) -> None:
    """A record with password="hunter2" and a JWT in Msg reaches Kafka masked, through SCRAM over TLS."""
    topic = f"sec-{uuid.uuid4().hex[:8]}"
    structlog.configure(
        processors=logpipe.processors(
            exporter="kafka",
            exporter_options={"kafka": {**settings(secure_kafka), "topic": topic, "client": client}},
            isolation=isolation, local_render="none",
        )
    )  # fmt: skip
    log = structlog.get_logger()
    for i in range(20):
        log.info(f"login with {JWT}", password="hunter2", i=i)
    assert logpipe.flush(60)
    assert logpipe.stats()["kafka"].sent == 20
    found = messages(secure_kafka, topic, 20)
    assert len(found) == 20
    for message in found:
        doc = orjson.loads(message.value)
        assert doc["Field"]["password"] == "[REDACTED]" and JWT not in doc["Msg"]
        assert b"hunter2" not in message.value


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_a_wrong_password_spools_names_the_setting_and_replay_delivers_later(
    secure_kafka: SecureKafka, tmp_path: Path, client: str
) -> None:
    """Records go to the spool, stderr names LOGPIPE_KAFKA_SASL_PASSWORD, no secret shows; `logpipe replay`
    with the right password delivers them all."""
    topic = f"sec-{uuid.uuid4().hex[:8]}"
    wrong = "not-" + uuid.uuid4().hex
    app = (
        "import structlog, logpipe\n"
        "structlog.configure(processors=logpipe.processors(exporter='kafka', local_render='none'))\n"
        "log = structlog.get_logger()\n"
        "for i in range(30):\n"
        "    log.info('order', i=i)\n"
        "assert logpipe.flush(60)\n"
    )
    app_env = {**os.environ, **env(secure_kafka, "LOGPIPE_KAFKA_", wrong), "LOGPIPE_KAFKA_TOPIC": topic}
    app_env["LOGPIPE_KAFKA_CLIENT"] = client
    done = subprocess.run([sys.executable, "-c", app], cwd=tmp_path, env=app_env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "LOGPIPE_KAFKA_SASL_PASSWORD" in done.stderr
    assert wrong not in done.stderr + done.stdout and "Traceback" not in done.stderr
    spool = tmp_path / "logs" / "spool" / "kafka"
    assert SpoolCounter().backlog(spool).records == 30

    replay_env = {**os.environ, **env(secure_kafka, "LOGPIPE_KAFKA_"), "LOGPIPE_KAFKA_TOPIC": topic}
    replay_env["LOGPIPE_KAFKA_CLIENT"] = client
    replayed = subprocess.run([str(LOGPIPE), "replay", str(spool), "--exporter", "kafka"], cwd=tmp_path,
                              env=replay_env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert secure_kafka.password not in replayed.stderr + replayed.stdout
    ids = {orjson.loads(m.value)["Field"]["i"] for m in messages(secure_kafka, topic, 30)}
    assert ids == set(range(30))


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_tail_over_sasl_ssl_with_flags(secure_kafka: SecureKafka, tmp_path: Path, client: str) -> None:
    """`logpipe tail --security-protocol ...` with the password from the environment only."""
    topic = f"sec-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i} token=abc{i}\n" for i in range(25)))
    s = settings(secure_kafka)
    done = subprocess.run(
        [str(LOGPIPE), "tail", "--once", "--quiet", str(log), "-t", topic, "-b", s["bootstrap_servers"],
         "--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username",
         s["sasl_username"], "--ssl-cafile", s["ssl_cafile"]],
        cwd=tmp_path,
        env={**os.environ, "LOGPIPE_KAFKA_SASL_PASSWORD": secure_kafka.password, "LOGPIPE_KAFKA_CLIENT": client},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert secure_kafka.password not in done.stderr + done.stdout
    assert sorted(orjson.loads(m.value)["Msg"].split()[1] for m in messages(secure_kafka, topic, 25)) == sorted(
        str(i) for i in range(25)
    )


@pytest.mark.elasticsearch
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_ship_consumes_and_dead_letters_over_sasl_ssl(
    secure_kafka: SecureKafka, es_service: Service, client: str, tmp_path: Path
) -> None:
    """`logpipe ship` reads a SASL_SSL topic with either library and writes its dead letters back over it."""
    from kafka import KafkaProducer

    from elasticsearch import Elasticsearch

    topic, prefix = f"sec-{uuid.uuid4().hex[:8]}", f"sec-{uuid.uuid4().hex[:8]}"
    security = {k: v for k, v in settings(secure_kafka).items() if k != "bootstrap_servers"}
    records = [logpipe.info(f"shipped {i}", "test") for i in range(10)]
    producer_env = Connection(
        (secure_kafka.sasl_ssl,), "t", "LOGPIPE_KAFKA_BOOTSTRAP_SERVERS",
        KafkaSecurity(**{**security, "sasl_password": Secret(secure_kafka.password),
                         "ssl_cafile": Path(security["ssl_cafile"])}),  # type: ignore[arg-type]
    )  # fmt: skip
    producer = KafkaProducer(**kafka_python(producer_env, acks="all"))
    for record in records:
        producer.send(topic, record.payload)
    producer.send(topic, b"x" * 5000)  # over --max-message-bytes: a dead letter
    producer.flush(60)
    producer.close()
    ship_env = {**os.environ, **env(secure_kafka, "LOGPIPE_SHIP_"), "LOGPIPE_ELASTICSEARCH_REPLICAS": "0"}
    process = subprocess.Popen(
        [str(LOGPIPE), "ship", "--quiet", "-t", topic, "--group", topic, "--es-hosts", es_service.address,
         "--index-prefix", prefix, "--kafka-client", client, "--max-message-bytes", "4096"],
        cwd=tmp_path, env=ship_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with Elasticsearch(es_service.address) as es:

            def indexed() -> int:
                es.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True)
                return int(es.count(index=f"{prefix}-*", ignore_unavailable=True)["count"])

            wait_until(lambda: indexed() == 10, 90, interval=0.5)
        letters = messages(secure_kafka, f"{topic}.dlq", 1)
        assert letters[0].value == b"x" * 5000
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    assert secure_kafka.password not in out + err
